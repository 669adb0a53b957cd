-- Video processing: job leases (which node runs a job, until when) and what finished stages
-- produced, so a resumed job skips them.
ALTER TABLE video_jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE video_jobs ADD COLUMN lease_owner text;
ALTER TABLE video_jobs ADD COLUMN lease_expires_at timestamptz;
ALTER TABLE video_jobs ADD COLUMN stage_results jsonb;
