package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tagcount/tagcount/counter"
)

// runBroker runs `tagcount broker`: the embedded Kafka-protocol broker on
// its own, for development and soak tests that stop and start it apart
// from the service (production points the service at real brokers).
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		addr       string
		dataDir    string
		topic      string
		partitions int
		port       int
	)
	if _, err := parse("broker", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", ".tagcount/kafka", "directory of the broker's logs and committed offsets")
		fs.StringVar(&topic, "kafka-topic", counter.DefaultTopic, "topic to create")
		fs.IntVar(&partitions, "kafka-partitions", counter.DefaultPartitions, "partitions of the topic when it is created")
		fs.IntVar(&port, "port", 9092, "port to listen on, on 127.0.0.1 (0: any free port)")
	}); err != nil {
		return err
	}
	b, err := counter.StartEmbeddedBroker(ctx, dataDir, partitions, topic, port)
	if err != nil {
		return err
	}
	defer b.Close()
	addr = b.Addrs()[0]
	fmt.Fprintf(stdout, "broker listening on %s (topic %s, data in %s)\n", addr, topic, dataDir)
	<-ctx.Done()
	return nil
}
