// Command ntt-demo-image writes NTT's sample medium (see internal/demo)
// into a directory and prints its medium hash.
package main

import (
	"fmt"
	"os"

	"github.com/HRDAG/ntt/internal/demo"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: ntt-demo-image DIR\n\nWrites <md5>.img (MBR: ext4 + ext2), its ddrescue mapfile with one\nunrescued region, and a ddrescue log into DIR; prints the medium hash.")
		os.Exit(2)
	}
	s, err := demo.Generate(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ntt-demo-image:", err)
		os.Exit(1)
	}
	fmt.Println(s.Hash)
}
