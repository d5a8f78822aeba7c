package poster_test

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// BenchmarkPostThroughJobs measures the new path's queue: b.N drafts posted
// by 64 concurrent authors (PostDraft: record, enqueue) and posted by the
// job worker, on a Redis of the benchmark's own, so its Redis figures are
// exact on a shared machine: Redis commands and the Redis server's command
// time (INFO commandstats usec) per posted draft, and this process's CPU
// per posted draft (the adaptive posting limit off):
//
//	go test -run '^$' -bench PostThroughJobs -benchtime 3000x ./poster/
func BenchmarkPostThroughJobs(b *testing.B) {
	r := testdb.StartRedis(b)
	db := testdb.New(b).DB
	opt := asynq.RedisClientOpt{Addr: r.Addr()}
	client := asynq.NewClient(opt)
	defer client.Close()
	queue := testdb.Queue(b)
	// The queue alone: the adaptive limit would pace posting by the shared
	// machine's noise.
	p := postertest.New(b, poster.Config{DB: db, Queue: client, QueueName: queue, Limit: poster.AIMDConfig{Off: true}})
	defer p.Close()
	store := &drafts.Store{DB: db}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int64, b.N)
	for i := range ids {
		d, err := store.CreateDraft(ctx, int64(1+i%500), benchWork(rng))
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = d.ID
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: poster.DefaultJobConcurrency, Queues: poster.JobQueues(queue),
		LogLevel: asynq.ErrorLevel, TaskCheckInterval: poster.DefaultJobPoll, ErrorHandler: asynq.ErrorHandlerFunc(p.HandleTaskError)})
	mux := asynq.NewServeMux()
	mux.HandleFunc(poster.TypeSyncDraft, p.HandleSyncDraftTask)
	if err := srv.Start(mux); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rc.Close()
	calls0, usec0 := redisCommandStats(b, rc)
	cpu0 := processCPUSeconds()
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			for i := g; i < len(ids); i += 64 {
				if _, err := p.PostDraft(ctx, int64(1+i%500), ids[i]); err != nil {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for n := 0; n < b.N; {
		if err := db.QueryRow("SELECT COUNT(*) FROM drafts WHERE state = 'posted'").Scan(&n); err != nil || time.Now().After(deadline) {
			b.Fatalf("%d of %d posted: %v", n, b.N, err)
		}
		time.Sleep(20 * time.Millisecond) // a benchmark's wait, not a test's synchronisation
	}
	b.StopTimer()
	calls, usec := redisCommandStats(b, rc)
	cpu := processCPUSeconds()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "posts/s")
	b.ReportMetric(float64(calls-calls0)/float64(b.N), "redis-cmds/post")
	b.ReportMetric(float64(usec-usec0)/float64(b.N), "redis-usec/post")
	b.ReportMetric((cpu-cpu0)*1000/float64(b.N), "proc-cpu-ms/post")
}

var cmdstat = regexp.MustCompile(`cmdstat_[^:]+:calls=(\d+),usec=(\d+)`)

// redisCommandStats sums calls and usec over Redis' INFO commandstats.
func redisCommandStats(b *testing.B, rc *redis.Client) (calls, usec int64) {
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range cmdstat.FindAllStringSubmatch(info, -1) {
		c, _ := strconv.ParseInt(m[1], 10, 64)
		u, _ := strconv.ParseInt(m[2], 10, 64)
		calls, usec = calls+c, usec+u
	}
	return calls, usec
}

// processCPUSeconds is this process's user+system CPU.
func processCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
