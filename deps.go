package ntt
import (
 _ "github.com/jackc/pgx/v5"
 _ "github.com/freddierice/go-losetup"
 _ "golang.org/x/sys/unix"
 _ "github.com/stretchr/testify/require"
 _ "github.com/klauspost/compress/zstd"
 _ "github.com/zeebo/blake3"
 _ "github.com/gabriel-vasile/mimetype"
)
