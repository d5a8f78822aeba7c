package loadgen

import (
	"bufio"
	"bytes"
	"database/sql"
	"net"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tagcount/tagcount/migrations"
)

// Resources is what a run cost the machine. The service runs in this
// process, so process figures include the load generator's own share.
type Resources struct {
	CPUSeconds   float64 `json:"process_cpu_s"` // user+system CPU of this process during the run
	CPUCores     float64 `json:"process_cores"` // CPUSeconds per wall second
	CPUMsPerPost float64 `json:"process_cpu_ms_per_post"`
	DBCPUSeconds float64 `json:"db_cpu_s"` // the database server's CPU during the run; -1 when unknown
	// RedisCPUSeconds is the Redis server's CPU during the run (all its
	// clients': it is shared); -1 when unknown.
	RedisCPUSeconds float64 `json:"redis_cpu_s"`
	PeakRSS         int64   `json:"peak_rss_bytes"`    // sampled VmRSS of this process
	PeakGoSys       int64   `json:"peak_go_sys_bytes"` // sampled memory the Go runtime holds from the OS
	PeakHeap        int64   `json:"peak_heap_bytes"`   // sampled live+unswept heap objects
	ProcessHWM      int64   `json:"process_hwm_bytes"` // VmHWM: the process's peak RSS since start
	// Pool is the service's database connection pool, when the run has it.
	Pool *PoolStats `json:"db_pool,omitempty"`
}

// PoolStats is how the service's database/sql pool fared during a run.
type PoolStats struct {
	MaxOpen     int     `json:"max_open"`
	PeakInUse   int     `json:"peak_in_use"`
	Waits       int64   `json:"waits"`        // requests that waited for a connection
	WaitSeconds float64 `json:"wait_s"`       // their total wait
	WaitMsMean  float64 `json:"wait_ms_mean"` // per wait
}

// resourceSampler measures CPU between start and stop and samples memory.
type resourceSampler struct {
	cpu0, db0, redis0 float64
	dbPID, redisPID   int
	t0                time.Time
	stopc             chan struct{}
	done              chan struct{}
	db                *migrations.DB
	pool0             sql.DBStats

	mu               sync.Mutex
	rss, goSys, heap int64
	peakInUse        int
}

func startResources(interval time.Duration, db *migrations.DB) *resourceSampler {
	s := &resourceSampler{stopc: make(chan struct{}), done: make(chan struct{}), t0: time.Now(), db: db}
	if db != nil {
		s.pool0 = db.Stats()
	}
	s.cpu0 = processCPU()
	s.dbPID = findServer("mariadbd", "mysqld")
	s.db0 = procCPU(s.dbPID)
	s.redisPID = findServer("redis-server")
	s.redis0 = procCPU(s.redisPID)
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		s.sample()
		for {
			select {
			case <-s.stopc:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

var memSamples = []metrics.Sample{
	{Name: "/memory/classes/total:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
}

func (s *resourceSampler) sample() {
	ms := make([]metrics.Sample, len(memSamples))
	copy(ms, memSamples)
	metrics.Read(ms)
	rss := procStatusBytes("VmRSS:")
	u := func(i int) int64 {
		if ms[i].Value.Kind() == metrics.KindUint64 {
			return int64(ms[i].Value.Uint64())
		}
		return 0
	}
	inUse := 0
	if s.db != nil {
		inUse = s.db.Stats().InUse
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Mapped by the runtime and not returned to the OS.
	s.goSys = max(s.goSys, u(0)-u(1))
	s.heap = max(s.heap, u(2))
	s.rss = max(s.rss, rss)
	s.peakInUse = max(s.peakInUse, inUse)
}

// stop ends sampling and returns the figures; posts divides CPU per post.
func (s *resourceSampler) stop(posts int64) Resources {
	close(s.stopc)
	<-s.done
	wall := time.Since(s.t0).Seconds()
	r := Resources{CPUSeconds: round3(processCPU() - s.cpu0), DBCPUSeconds: -1, RedisCPUSeconds: -1}
	if wall > 0 {
		r.CPUCores = round3(r.CPUSeconds / wall)
	}
	if posts > 0 {
		r.CPUMsPerPost = round3(r.CPUSeconds * 1000 / float64(posts))
	}
	if c := procCPU(s.dbPID); c >= 0 && s.db0 >= 0 {
		r.DBCPUSeconds = round3(c - s.db0)
	}
	if c := procCPU(s.redisPID); c >= 0 && s.redis0 >= 0 {
		r.RedisCPUSeconds = round3(c - s.redis0)
	}
	s.mu.Lock()
	r.PeakRSS, r.PeakGoSys, r.PeakHeap = s.rss, s.goSys, s.heap
	if s.db != nil {
		st := s.db.Stats()
		p := &PoolStats{MaxOpen: st.MaxOpenConnections, PeakInUse: s.peakInUse, Waits: st.WaitCount - s.pool0.WaitCount,
			WaitSeconds: round3((st.WaitDuration - s.pool0.WaitDuration).Seconds())}
		if p.Waits > 0 {
			p.WaitMsMean = round3(p.WaitSeconds * 1000 / float64(p.Waits))
		}
		r.Pool = p
	}
	s.mu.Unlock()
	r.ProcessHWM = procStatusBytes("VmHWM:")
	return r
}

// processCPU is this process's user+system CPU time in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// procStatusBytes reads a "kB" field of /proc/self/status, or 0.
func procStatusBytes(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// findServer returns the pid of a local process named one of names (a
// database server, Redis), or 0.
func findServer(names ...string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		if slices.Contains(names, strings.TrimSpace(string(b))) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			return pid
		}
	}
	return 0
}

// procCPU is the user+system CPU of pid in seconds, or -1.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the parenthesised command; utime and stime are the 14th
	// and 15th fields of the line, in clock ticks (USER_HZ, 100 on Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100
}

// findRedisServer returns the pid of the local redis-server listening on
// addr's port (its command line names it), or 0.
func findRedisServer(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || !bytes.HasPrefix(b, []byte("redis-server")) {
			continue
		}
		for _, arg := range strings.Fields(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))) {
			if strings.HasSuffix(arg, ":"+port) || arg == port {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
				return pid
			}
		}
	}
	return 0
}
