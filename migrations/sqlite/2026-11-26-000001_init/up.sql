-- Echo's schema on SQLite: uuids as hyphenated text, timestamps as RFC 3339 text, json as text.
CREATE TABLE users (
    id          text PRIMARY KEY,
    username    text NOT NULL UNIQUE,
    email       text,
    full_name   text,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  text NOT NULL,
    updated_at  text NOT NULL
);

CREATE TABLE chats (
    id          text PRIMARY KEY,
    owner_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text,
    last_seq    bigint NOT NULL DEFAULT 0,
    created_at  text NOT NULL,
    updated_at  text NOT NULL
);

CREATE TABLE chat_members (
    chat_id     text NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at   text NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
-- "chats I am a member of" and "do these two users share a chat".
CREATE INDEX chat_members_user_idx ON chat_members (user_id, chat_id);

CREATE TABLE messages (
    id             text PRIMARY KEY,
    chat_id        text NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq            bigint NOT NULL,
    user_id        text REFERENCES users (id) ON DELETE SET NULL,
    role           text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    is_from_ai     boolean NOT NULL DEFAULT false,
    content        text NOT NULL,
    client_msg_id  text,
    finish_reason  text,
    created_at     text NOT NULL,
    UNIQUE (chat_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_idx ON messages (chat_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

CREATE TABLE videos (
    id                integer PRIMARY KEY AUTOINCREMENT,
    uploader_user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    original_filename text NOT NULL,
    storage_path      text NOT NULL,
    content_type      text NOT NULL,
    size_bytes        bigint NOT NULL DEFAULT 0,
    upload_completed  boolean NOT NULL DEFAULT false,
    created_at        text NOT NULL,
    updated_at        text NOT NULL
);
CREATE INDEX videos_uploader_idx ON videos (uploader_user_id, created_at DESC);

CREATE TABLE video_jobs (
    id                 integer PRIMARY KEY AUTOINCREMENT,
    video_id           integer NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status             text NOT NULL CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    progress           integer NOT NULL DEFAULT 0,
    stage              text,
    processing_stages  text,
    error_message      text,
    created_at         text NOT NULL,
    updated_at         text NOT NULL
);
CREATE INDEX video_jobs_user_status_idx ON video_jobs (user_id, status, created_at DESC);
CREATE INDEX video_jobs_video_idx ON video_jobs (video_id, created_at DESC);
CREATE INDEX video_jobs_status_idx ON video_jobs (status);

CREATE TABLE video_metadata (
    id                                integer PRIMARY KEY AUTOINCREMENT,
    video_id                          integer NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    job_id                            integer NOT NULL UNIQUE REFERENCES video_jobs (id) ON DELETE CASCADE,
    title                             text,
    description                       text,
    tags                              text,
    transcript_text                   text,
    transcript_path                   text,
    subtitle_paths                    text,
    thumbnail_path                    text,
    extracted_video_duration_seconds  real,
    extracted_video_resolution        text,
    extracted_video_format            text,
    show_notes_text                   text,
    created_at                        text NOT NULL,
    updated_at                        text NOT NULL
);
CREATE INDEX video_metadata_video_idx ON video_metadata (video_id);
