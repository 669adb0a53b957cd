ALTER TABLE video_jobs DROP COLUMN stage_results;
ALTER TABLE video_jobs DROP COLUMN lease_expires_at;
ALTER TABLE video_jobs DROP COLUMN lease_owner;
ALTER TABLE video_jobs DROP COLUMN attempts;
