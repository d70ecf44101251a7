-- Schema v1: the catalog of media, their inodes and paths, the content
-- store's blobs, and diagnostic events. See design.md "Database".

CREATE TABLE medium (
    medium_hash  text PRIMARY KEY CHECK (medium_hash ~ '^[0-9a-f]{16,64}$'),
    medium_human text,
    added_at     timestamptz NOT NULL DEFAULT now(),
    health       text CHECK (health IN ('ok', 'incomplete', 'corrupt', 'failed')),
    image_path   text,
    enum_root    bytea,
    enum_done    timestamptz,
    copy_done    timestamptz,
    archive_path text,
    problems     jsonb
);

-- One row per (dev, ino) of a medium: hardlinks share a row; dev keeps the
-- partitions of one disk apart. Partitioned by medium so that a medium's
-- rows load, index and drop as a unit.
CREATE TABLE inode (
    medium_hash     text    NOT NULL,
    dev             bigint  NOT NULL,
    ino             bigint  NOT NULL,
    fs_type         char(1) NOT NULL CHECK (fs_type IN ('f', 'd', 'l', 'b', 'c', 'p', 's')),
    nlink           bigint  NOT NULL,
    size            bigint  NOT NULL,
    mtime           bigint  NOT NULL, -- seconds since the epoch, may be negative
    copied          boolean NOT NULL DEFAULT false,
    claimed_by      text,
    claimed_at      timestamptz,
    status          text    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'success', 'failed_retryable', 'failed_permanent')),
    error_type      text CHECK (error_type IN ('path_error', 'io_error', 'hash_error', 'permission_error', 'unknown')),
    errors          text[],
    error_count     integer NOT NULL DEFAULT 0,
    blobid          text CHECK (blobid ~ '^[0-9a-f]{64}$'),
    mime_type       text,
    processed_at    timestamptz,
    by_hash_created boolean,
    damage          jsonb,
    PRIMARY KEY (medium_hash, dev, ino)
) PARTITION BY LIST (medium_hash);

-- One row per directory entry; path is relative to the medium root with a
-- leading "/", stored byte for byte. The foreign key to the inode lives on
-- each partition pair (partition to partition), see CreatePartitions.
CREATE TABLE path (
    medium_hash    text   NOT NULL,
    dev            bigint NOT NULL,
    ino            bigint NOT NULL,
    path           bytea  NOT NULL,
    exclude_reason text,
    PRIMARY KEY (medium_hash, path)
) PARTITION BY LIST (medium_hash);

CREATE TABLE blobs (
    blobid       text PRIMARY KEY CHECK (blobid ~ '^[0-9a-f]{64}$'),
    size         bigint NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_checked timestamptz
);

CREATE TABLE diagnostic_event (
    id          bigserial PRIMARY KEY,
    medium_hash text NOT NULL,
    dev         bigint,
    ino         bigint,
    at          timestamptz NOT NULL DEFAULT now(),
    worker_id   text,
    retry_count integer,
    checks      jsonb,
    action      text NOT NULL,
    exception   text
);
CREATE INDEX diagnostic_event_medium_idx ON diagnostic_event (medium_hash, at);
