// Writes what Go's time.ParseDuration says about a fixed set of strings, one per line:
// `<input>\t<nanoseconds>\t<Go's String() of them>`, or `<input>\terror`. The strings are
// Go's own test table, values at the edges of int64 nanoseconds, and pseudo-random strings
// (fixed seed): number-unit pairs of every size, and pieces of digits, points, signs, units and
// stray letters; all at most 32 characters (the CRDs' maxLength).
//
// faultline's parser (src/api/duration.rs) is checked against this file:
//
//	go run scripts/go-durations/main.go > tests/fixtures/go_durations.tsv
package main

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

var fixed = []string{
	"0", "5s", "30s", "1478s", "-5s", "+5s", "-0", "+0", "5.0s", "5.6s", "5.s", ".5s", "1.0s",
	"1.00s", "1.004s", "1.0040s", "100.00100s", "10ns", "11us", "12µs", "12μs", "13ms", "14s",
	"15m", "16h", "3h30m", "10.5s4m", "-2m3.4s", "1h2m3s4ms5us6ns", "39h9m14.425s",
	"52763797000ns", "0.3333333333333333333h", "9007199254740993ns", "9223372036854775807ns",
	"9223372036854775.807us", "9223372036s854ms775us807ns", "-9223372036854775808ns",
	"-9223372036854775.808us", "-9223372036s854ms775us808ns", "-2562047h47m16.854775808s",
	"0.100000000000000000000h", "0.830103483285477580700h", "", "3", "-", "s", ".", "-.", ".s",
	"+.s", "1d", "9223372036854775810ns", "9223372036854775808ns", "-9223372036854775809ns",
	"9223372036854776us", "3000000h", "9223372036854775.808us", "9223372036854ms775us808ns",
	"999999999999999999999h", "5000000000000000h", "100000000h", "2562047h", "2562048h",
	"2562047h47m16.854775807s", "2562047h47m16.854775808s", "1h23h0.0000000001s",
	"86400.000000001s", "24.0000000000001h", "5 minutes", "fast", "1ms", "0s", "00", "0.0s",
	"1e3s", "0x10s", "1h 30m", " 1h", "1h ", "1H", "1S", "1Ms", "1.5.5s", "1..5s", "1sm", "1hh",
}

var pieces = []string{
	"0", "1", "2", "5", "9", "00", "10", "99", "999999", "9223372036854775807", "18446744073709551616",
	".", ".", "-", "+", "ns", "us", "µs", "μs", "ms", "s", "m", "h", "h", "s", "x", "d", " ", "e",
}

var units = []string{"ns", "us", "µs", "μs", "ms", "s", "m", "h"}

// wellFormed builds number-unit pairs: these mostly parse, and their sizes span int64.
func wellFormed(rng *rand.Rand) string {
	digits := func(max int) string {
		var b strings.Builder
		for n := rng.Intn(max + 1); n > 0; n-- {
			b.WriteByte(byte('0' + rng.Intn(10)))
		}
		return b.String()
	}
	var b strings.Builder
	if rng.Intn(8) == 0 {
		b.WriteString([]string{"-", "+"}[rng.Intn(2)])
	}
	for n := 1 + rng.Intn(3); n > 0; n-- {
		b.WriteString(digits(20))
		if rng.Intn(3) == 0 {
			b.WriteString("." + digits(22))
		}
		b.WriteString(units[rng.Intn(len(units))])
	}
	return b.String()
}

func main() {
	rng := rand.New(rand.NewSource(20261123))
	inputs := append([]string{}, fixed...)
	for len(inputs) < 6000 {
		var s string
		if len(inputs)%2 == 0 {
			s = wellFormed(rng)
		} else {
			var b strings.Builder
			for n := 1 + rng.Intn(8); n > 0; n-- {
				b.WriteString(pieces[rng.Intn(len(pieces))])
			}
			s = b.String()
		}
		if len([]rune(s)) <= 32 {
			inputs = append(inputs, s)
		}
	}
	for _, in := range inputs {
		d, err := time.ParseDuration(in)
		if err != nil {
			fmt.Printf("%s\terror\n", in)
		} else {
			fmt.Printf("%s\t%d\t%s\n", in, int64(d), d)
		}
	}
}
