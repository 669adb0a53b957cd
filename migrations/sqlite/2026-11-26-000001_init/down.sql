DROP TABLE video_metadata;
DROP TABLE video_jobs;
DROP TABLE videos;
DROP TABLE messages;
DROP TABLE chat_members;
DROP TABLE chats;
DROP TABLE users;
