package loadgen

import "testing"

func TestRedisCommandsAreTheSumOfEveryCommandsCalls(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=120,usec=5000,usec_per_call=41.67,rejected_calls=0,failed_calls=1\r\n" +
		"cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setname:calls=7,usec=7,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
	if got := sumCommandCalls(info); got != 130 {
		t.Errorf("sum of calls = %d, want 130", got)
	}
	if w := redisWork(1000, 1130, 13); w.Commands != 130 || w.CommandsPerW != 10 {
		t.Errorf("redis work %+v, want 130 commands, 10 per posted work", w)
	}
}
