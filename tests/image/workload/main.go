// workload: the real-node tests' container program. Its CPU and memory use follow a schedule the
// test sets, so a test can make usage rise, fall or spike.
//
// Started as /pause (same binary, another name) it is the pod sandbox: it waits for SIGTERM and
// reaps children.
//
// The load is read from, in order of precedence:
//   - the file named by LOAD_FILE (default /ctl/load), re-read every 250 ms, one line
//     "cpu=250m memory=96Mi" (either key may be left out: 0);
//   - SCHEDULE, steps relative to the program's start, e.g. "0s:cpu=100m,memory=32Mi;30s:memory=128Mi"
//     (a step keeps the values it does not name from the previous one);
//   - CPU and MEMORY, constant (e.g. CPU=200m MEMORY=64Mi).
//
// On SIGTERM it exits with status 143, as a process the signal killed would report (as PID 1 of
// its container it would otherwise ignore a signal without a handler).
//
// Memory is held as touched anonymous pages and given back to the kernel when the target falls.
// CPU is burned in 100 ms periods: one goroutine per started core, each busy its share of a period.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type load struct {
	milliCPU int64
	bytes    int64
}

type step struct {
	at  time.Duration
	cpu *int64
	mem *int64
}

func main() {
	if filepath.Base(os.Args[0]) == "pause" {
		pause()
		return
	}
	steps, err := parseSchedule(os.Getenv("SCHEDULE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "SCHEDULE:", err)
		os.Exit(2)
	}
	base, err := parseLoad("cpu=" + or(os.Getenv("CPU"), "0") + " memory=" + or(os.Getenv("MEMORY"), "0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "CPU/MEMORY:", err)
		os.Exit(2)
	}
	file := or(os.Getenv("LOAD_FILE"), "/ctl/load")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-term
		os.Exit(143)
	}()
	start := time.Now()
	var milliCPU atomic.Int64
	go burn(&milliCPU, 0)
	var chunks [][]byte
	last := load{-1, -1}
	for {
		want := current(base, steps, time.Since(start), file)
		milliCPU.Store(want.milliCPU)
		for cores := int64(1); cores*1000 < want.milliCPU && cores < 64; cores++ {
			if !burners[cores] {
				burners[cores] = true
				go burn(&milliCPU, cores)
			}
		}
		chunks = hold(chunks, want.bytes)
		if want != last {
			fmt.Printf("%s cpu=%dm memory=%dMi\n", time.Now().UTC().Format(time.RFC3339), want.milliCPU, want.bytes>>20)
			last = want
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var burners = map[int64]bool{0: true}

// burn keeps one core busy for this core's share of every 100 ms period.
func burn(milliCPU *atomic.Int64, core int64) {
	const period = 100 * time.Millisecond
	for {
		share := milliCPU.Load() - core*1000
		if share > 1000 {
			share = 1000
		}
		if share <= 0 {
			time.Sleep(period)
			continue
		}
		busy := time.Duration(share) * period / 1000
		t0 := time.Now()
		for time.Since(t0) < busy {
		}
		time.Sleep(period - busy)
	}
}

// hold grows or shrinks the held memory to want bytes (MiB chunks, every page touched).
func hold(chunks [][]byte, want int64) [][]byte {
	n := int(want >> 20)
	for len(chunks) < n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		chunks = append(chunks, b)
	}
	if len(chunks) > n {
		for i := n; i < len(chunks); i++ {
			chunks[i] = nil
		}
		chunks = chunks[:n:n]
		debug.FreeOSMemory()
	}
	return chunks
}

func current(base load, steps []step, since time.Duration, file string) load {
	if b, err := os.ReadFile(file); err == nil {
		if l, err := parseLoad(string(b)); err == nil {
			return l
		}
	}
	l := base
	for _, s := range steps {
		if s.at > since {
			break
		}
		if s.cpu != nil {
			l.milliCPU = *s.cpu
		}
		if s.mem != nil {
			l.bytes = *s.mem
		}
	}
	return l
}

func parseSchedule(s string) ([]step, error) {
	var steps []step
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		at, rest, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("step %q: want DURATION:key=value,...", part)
		}
		d, err := time.ParseDuration(at)
		if err != nil {
			return nil, err
		}
		st := step{at: d}
		for _, kv := range strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == ' ' }) {
			k, v, _ := strings.Cut(kv, "=")
			q, err := quantity(k, v)
			if err != nil {
				return nil, err
			}
			switch k {
			case "cpu":
				st.cpu = &q
			case "memory":
				st.mem = &q
			}
		}
		steps = append(steps, st)
	}
	return steps, nil
}

func parseLoad(s string) (load, error) {
	var l load
	for _, kv := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		k, v, _ := strings.Cut(kv, "=")
		q, err := quantity(k, v)
		if err != nil {
			return l, err
		}
		switch k {
		case "cpu":
			l.milliCPU = q
		case "memory":
			l.bytes = q
		}
	}
	return l, nil
}

// quantity parses "250m"/"1.5"/"2" (cpu, in millicores) or "96Mi"/"1Gi"/"1000000" (memory, bytes).
func quantity(key, v string) (int64, error) {
	switch key {
	case "cpu":
		if m, ok := strings.CutSuffix(v, "m"); ok {
			return strconv.ParseInt(m, 10, 64)
		}
		f, err := strconv.ParseFloat(v, 64)
		return int64(f * 1000), err
	case "memory":
		for suffix, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
			if n, ok := strings.CutSuffix(v, suffix); ok {
				x, err := strconv.ParseInt(n, 10, 64)
				return x * mult, err
			}
		}
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, fmt.Errorf("unknown key %q (want cpu or memory)", key)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// pause is the sandbox: sleep until SIGTERM/SIGINT, reap children.
func pause() {
	c := make(chan os.Signal, 4)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range c {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
