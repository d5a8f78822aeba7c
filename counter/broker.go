package counter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultPartitions is the partition count of tag-uses when none is given.
const DefaultPartitions = 8

// EmbeddedBroker is an in-process, single-node Kafka-protocol broker
// (franz-go's kfake) listening on 127.0.0.1, for `tagcount dev` and tests.
// With a data dir it persists its logs and committed offsets there and
// reloads them on the next start.
type EmbeddedBroker struct {
	cluster *kfake.Cluster
	addrs   []string
}

// StartEmbeddedBroker starts a broker on 127.0.0.1:port (0 picks a free
// port), persisting to dataDir when it is not empty, and makes sure topic
// exists with partitions partitions (DefaultPartitions when <= 0; topic
// defaults to DefaultTopic). It returns an error when the port is taken, the
// data dir cannot be loaded, or the topic cannot be created before ctx ends.
func StartEmbeddedBroker(ctx context.Context, dataDir string, partitions int, topic string, port int) (*EmbeddedBroker, error) {
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	if topic == "" {
		topic = DefaultTopic
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.SeedTopics(int32(partitions), topic),
		kfake.DefaultNumPartitions(partitions),
		// Let consumers choose short session timeouts, so a crashed
		// consumer's partitions move quickly in development and tests.
		kfake.GroupMinSessionTimeout(time.Second),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("counter: embedded Kafka on port %d: %w", port, err)
	}
	b := &EmbeddedBroker{cluster: cluster, addrs: cluster.ListenAddrs()}
	// Seeding is skipped when state is reloaded from dataDir; make sure the
	// topic exists either way.
	if err := EnsureTopic(ctx, b.addrs, topic, partitions); err != nil {
		cluster.Close()
		return nil, err
	}
	return b, nil
}

// Addrs returns the broker's host:port addresses.
func (b *EmbeddedBroker) Addrs() []string { return append([]string(nil), b.addrs...) }

// Close stops the broker, syncing its data dir. It is safe to call twice.
func (b *EmbeddedBroker) Close() { b.cluster.Close() }

// EnsureTopic creates topic with partitions partitions and the cluster's
// default replication factor, unless it exists already (whatever its
// partition count). It returns an error when no broker answers or the
// controller refuses the topic.
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	return KafkaSecurity{}.EnsureTopic(ctx, brokers, topic, partitions)
}

// EnsureTopic is the package's EnsureTopic, connecting with k's SASL and
// TLS.
func (k KafkaSecurity) EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	return ensureTopic(ctx, k, brokers, kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1})
}

// ensureTopic creates the topic tc describes unless it exists.
func ensureTopic(ctx context.Context, sec KafkaSecurity, brokers []string, tc kafka.TopicConfig) error {
	if len(brokers) == 0 {
		return errors.New("counter: EnsureTopic needs brokers")
	}
	if tc.NumPartitions <= 0 {
		tc.NumPartitions = DefaultPartitions
	}
	topic := tc.Topic
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sec.checkLogin(ctx, brokers); err != nil {
		return fmt.Errorf("counter: create topic %s: %w", topic, err)
	}
	transport := sec.transport()
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 10 * time.Second}
	var lastErr error
	for attempt := 0; ; attempt++ {
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
		if err == nil {
			err = resp.Errors[topic]
			if err == nil || errors.Is(err, kafka.TopicAlreadyExists) {
				return nil
			}
		}
		lastErr = err
		var ne net.Error
		if !errors.As(err, &ne) && !errors.Is(err, kafka.NotController) && !errors.Is(err, kafka.LeaderNotAvailable) {
			break
		}
		if err := loop.Sleep(ctx, time.Duration(100*(attempt+1))*time.Millisecond); err != nil {
			return fmt.Errorf("counter: create topic %s: %w (last error: %v)", topic, err, lastErr)
		}
	}
	return fmt.Errorf("counter: create topic %s: %w", topic, sec.explain(lastErr))
}

// VerifyTopic checks that topic exists on brokers, for deployments where
// tagcount may not create topics. It returns an error naming the topic when
// the brokers do not have it or cannot be asked.
func VerifyTopic(ctx context.Context, brokers []string, topic string) error {
	return KafkaSecurity{}.VerifyTopic(ctx, brokers, topic)
}

// VerifyTopic is VerifyTopic with k's SASL and TLS.
func (k KafkaSecurity) VerifyTopic(ctx context.Context, brokers []string, topic string) error {
	if len(brokers) == 0 {
		return errors.New("counter: VerifyTopic needs brokers")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	transport := k.transport()
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 10 * time.Second}
	resp, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("counter: look up topic %s: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Name == topic && t.Error == nil && len(t.Partitions) > 0 {
			return nil
		}
	}
	return fmt.Errorf("counter: topic %s does not exist; create it (or let tagcount create topics)", topic)
}
