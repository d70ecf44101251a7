-- How a medium's files were reached: 'mount' (the kernel mounted its image
-- through loop devices) or 'image' (package imagefs read the image in user
-- space). NULL until a pipeline or copier run records it; a rerun with the
-- other reader overwrites it, since what matters is the reader that
-- catalogued and copied the files now in the store.
ALTER TABLE medium ADD COLUMN reader text CHECK (reader IN ('mount', 'image'));
