package extfs

import "math/bits"

// The ext4 htree's name hashes (the kernel's fs/ext4/hash.c): the scan
// checks that every entry of a hash-indexed directory lies in the leaf
// its hash leads to, since the kernel's readdir and lookup go by the hash
// and do not see an entry anywhere else.

const (
	hashLegacy = iota
	hashHalfMD4
	hashTEA
	hashLegacyUnsigned
	hashHalfMD4Unsigned
	hashTEAUnsigned
)

func teaTransform(buf *[4]uint32, in []uint32) {
	var sum uint32
	b0, b1 := buf[0], buf[1]
	a, b, c, d := in[0], in[1], in[2], in[3]
	for range 16 {
		sum += 0x9E3779B9
		b0 += ((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >> 5) + b)
		b1 += ((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >> 5) + d)
	}
	buf[0] += b0
	buf[1] += b1
}

func halfMD4Transform(buf *[4]uint32, in []uint32) {
	a, b, c, d := buf[0], buf[1], buf[2], buf[3]
	f := func(x, y, z uint32) uint32 { return z ^ (x & (y ^ z)) }
	g := func(x, y, z uint32) uint32 { return (x & y) + ((x ^ y) & z) }
	h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
	const k2, k3 = 0o13240474631, 0o15666365641
	type fn func(x, y, z uint32) uint32
	round := func(f fn, a *uint32, b, c, d, x uint32, s int) {
		*a = bits.RotateLeft32(*a+f(b, c, d)+x, s)
	}
	round(f, &a, b, c, d, in[0], 3)
	round(f, &d, a, b, c, in[1], 7)
	round(f, &c, d, a, b, in[2], 11)
	round(f, &b, c, d, a, in[3], 19)
	round(f, &a, b, c, d, in[4], 3)
	round(f, &d, a, b, c, in[5], 7)
	round(f, &c, d, a, b, in[6], 11)
	round(f, &b, c, d, a, in[7], 19)

	round(g, &a, b, c, d, in[1]+k2, 3)
	round(g, &d, a, b, c, in[3]+k2, 5)
	round(g, &c, d, a, b, in[5]+k2, 9)
	round(g, &b, c, d, a, in[7]+k2, 13)
	round(g, &a, b, c, d, in[0]+k2, 3)
	round(g, &d, a, b, c, in[2]+k2, 5)
	round(g, &c, d, a, b, in[4]+k2, 9)
	round(g, &b, c, d, a, in[6]+k2, 13)

	round(h, &a, b, c, d, in[3]+k3, 3)
	round(h, &d, a, b, c, in[7]+k3, 9)
	round(h, &c, d, a, b, in[2]+k3, 11)
	round(h, &b, c, d, a, in[6]+k3, 15)
	round(h, &a, b, c, d, in[1]+k3, 3)
	round(h, &d, a, b, c, in[5]+k3, 9)
	round(h, &c, d, a, b, in[0]+k3, 11)
	round(h, &b, c, d, a, in[4]+k3, 15)

	buf[0] += a
	buf[1] += b
	buf[2] += c
	buf[3] += d
}

// char is a name byte as the kernel's C char: signed or unsigned.
func char(c byte, unsigned bool) uint32 {
	if unsigned {
		return uint32(c)
	}
	return uint32(int32(int8(c)))
}

func str2hashbuf(msg []byte, buf []uint32, unsigned bool) {
	n := len(msg)
	pad := uint32(n) | uint32(n)<<8
	pad |= pad << 16
	val := pad
	num := len(buf)
	if n > num*4 {
		n = num * 4
	}
	k := 0
	for i := 0; i < n; i++ {
		val = char(msg[i], unsigned) + val<<8
		if i%4 == 3 {
			buf[k] = val
			k++
			val = pad
			num--
		}
	}
	if num--; num >= 0 {
		buf[k] = val
		k++
	}
	for num--; num >= 0; num-- {
		buf[k] = pad
		k++
	}
}

func dxHackHash(name []byte, unsigned bool) uint32 {
	var hash uint32
	hash0, hash1 := uint32(0x12a3fe2d), uint32(0x37abe8f9)
	for _, c := range name {
		hash = hash1 + (hash0 ^ char(c, unsigned)*7152373)
		if hash&0x80000000 != 0 {
			hash -= 0x7fffffff
		}
		hash1, hash0 = hash0, hash
	}
	return hash0 << 1
}

// dxHash is the kernel's major hash of name (ext4fs_dirhash), false for a
// hash version it does not compute.
func dxHash(name []byte, version int, seed [4]uint32) (uint32, bool) {
	buf := [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}
	if seed != [4]uint32{} {
		buf = seed
	}
	var hash uint32
	var in [8]uint32
	switch version {
	case hashLegacy, hashLegacyUnsigned:
		hash = dxHackHash(name, version == hashLegacyUnsigned)
	case hashHalfMD4, hashHalfMD4Unsigned:
		for p := name; len(p) > 0; p = p[min(32, len(p)):] {
			str2hashbuf(p, in[:8], version == hashHalfMD4Unsigned)
			halfMD4Transform(&buf, in[:8])
		}
		hash = buf[1]
	case hashTEA, hashTEAUnsigned:
		for p := name; len(p) > 0; p = p[min(16, len(p)):] {
			str2hashbuf(p, in[:4], version == hashTEAUnsigned)
			teaTransform(&buf, in[:4])
		}
		hash = buf[0]
	default:
		return 0, false
	}
	hash &^= 1
	if hash == 0x7fffffff<<1 {
		hash = (0x7fffffff - 1) << 1
	}
	return hash, true
}
