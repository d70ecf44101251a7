-- Bit rot: a blob that fails verification (its content no longer hashes
-- to its name, its size is wrong, it is missing or unreadable) is moved
-- aside to <store>/quarantine/<blake3>.<time> — never deleted — and marked
-- here; every inode naming it goes back to pending (blobid kept, so the
-- catalog still says which content it needs), and the next copy of any
-- medium holding that content writes a correct blob and clears the mark.
-- While quarantined_at is set, no copy may dedupe against the blob.
-- quarantine_reason keeps what was found and where the file went, also
-- after the blob is written again (history).
ALTER TABLE blobs ADD COLUMN quarantined_at timestamptz,
    ADD COLUMN quarantine_reason text;
-- Quarantined blobs are few: a partial index finds them without a scan.
CREATE INDEX blobs_quarantined_idx ON blobs (blobid) WHERE quarantined_at IS NOT NULL;
