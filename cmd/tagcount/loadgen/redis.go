package loadgen

import (
	"bufio"
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisWork is what the Redis server did during a run: the calls of every
// command, summed from INFO commandstats. The machine's Redis is shared:
// other clients' commands (other services, other tests) count too, so on
// a shared server the figure is an upper bound of the run's own.
type RedisWork struct {
	Commands     int64   `json:"commands"`
	CommandsPerW float64 `json:"commands_per_posted_work"`
}

// redisCounter reads a Redis server's command counters.
type redisCounter struct {
	c *redis.Client
}

func newRedisCounter(addr string) *redisCounter {
	if addr == "" {
		return nil
	}
	return &redisCounter{c: redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})}
}

// calls returns the calls of all commands so far, or false when the server
// cannot say.
func (rc *redisCounter) calls(ctx context.Context) (int64, bool) {
	if rc == nil {
		return 0, false
	}
	info, err := rc.c.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, false
	}
	return sumCommandCalls(info), true
}

func (rc *redisCounter) close() {
	if rc != nil {
		rc.c.Close()
	}
}

// sumCommandCalls sums calls= over the cmdstat_ lines of INFO
// commandstats ("cmdstat_get:calls=2,usec=10,...").
func sumCommandCalls(info string) int64 {
	var n int64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		_, stats, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasPrefix(sc.Text(), "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

func redisWork(before, after int64, works int64) *RedisWork {
	w := &RedisWork{Commands: after - before}
	if works > 0 {
		w.CommandsPerW = round3(float64(w.Commands) / float64(works))
	}
	return w
}
