package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/counter"
)

// secretFlags are the settings that hold credentials. Each gets a
// <name>-file twin, so a secret can come from a mounted file instead of a
// flag or the environment (which leak into process listings and crash
// reports).
var secretFlags = []string{"auth-secret", "mysql-dsn", "reconcile-read-dsn", "redis-url", "kafka-password", "unleash-token"}

// registerSecretFiles adds a <name>-file flag for every secret flag fs
// has. The returned function, called after parsing, reads each file given
// into its flag; it returns an error naming the flag when a file cannot be
// read or both the flag and its file are set.
func registerSecretFiles(fs *flag.FlagSet) func() error {
	files := map[string]*string{}
	for _, name := range secretFlags {
		if fs.Lookup(name) == nil {
			continue
		}
		files[name] = fs.String(name+"-file", "", "file holding --"+name+" (a trailing newline is dropped); instead of the flag")
	}
	return func() error {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, path := range files {
			if *path == "" {
				continue
			}
			if set[name] {
				return fmt.Errorf("--%s and --%s-file are both set; give one", name, name)
			}
			b, err := os.ReadFile(*path)
			if err != nil {
				return fmt.Errorf("--%s-file: %w", name, err)
			}
			if err := fs.Set(name, strings.TrimRight(string(b), "\r\n")); err != nil {
				return fmt.Errorf("--%s-file: %w", name, err)
			}
		}
		return nil
	}
}

// redisConfig is where Redis is and how to reach it. The zero value is
// the local Redis on 127.0.0.1:6379 without a password or TLS.
type redisConfig struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS;
	// empty = redis://Addr.
	URL string
	// Addr is host:port, the older setting, used when URL is empty.
	Addr string
	// CAFile is a PEM file of the CAs that sign the server's certificate
	// (a rediss:// URL only); empty = the system's roots.
	CAFile string
}

// setting names the flag the Redis location came from, for errors.
func (c redisConfig) setting() string {
	if c.URL != "" {
		return "--redis-url"
	}
	return "--redis-addr"
}

// options returns go-redis options for c. It returns an error naming the
// setting when the URL does not parse, the CA file cannot be read, or a CA
// file is given without TLS.
func (c redisConfig) options() (*redis.Options, error) {
	u := c.URL
	if u == "" {
		u = "redis://" + cmp.Or(c.Addr, "127.0.0.1:6379")
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		// ParseURL's errors do not repeat the URL, which may hold a password.
		return nil, fmt.Errorf("redis: %s: %w", c.setting(), err)
	}
	if c.CAFile != "" {
		if opts.TLSConfig == nil {
			return nil, fmt.Errorf("redis: --redis-ca-file is set but %s is not a rediss:// (TLS) URL", c.setting())
		}
		pool, err := caPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis: --redis-ca-file: %w", err)
		}
		opts.TLSConfig.RootCAs = pool
	}
	return opts, nil
}

// asynqOpt is o as asynq's connection settings, so the job queue, its
// scheduler and the queue UI reach Redis as every other client does.
func asynqOpt(o *redis.Options) asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, TLSConfig: o.TLSConfig}
}

// pingRedis checks that Redis answers with the credentials given. It
// returns an error naming the setting (e.g. "redis: --redis-url (Redis at
// host:6379): WRONGPASS …").
func pingRedis(ctx context.Context, c redisConfig, o *redis.Options) error {
	client := redis.NewClient(o)
	defer client.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("redis: %s (Redis at %s): %w; start it (e.g. `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\"`) or set TAGCOUNT_REDIS_URL",
			c.setting(), o.Addr, err)
	}
	return nil
}

// caPool reads a PEM file of CA certificates. It returns an error when the
// file cannot be read or holds no certificate.
func caPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// tlsWithCA returns a TLS client configuration trusting the CAs in path.
func tlsWithCA(path string) (*tls.Config, error) {
	pool, err := caPool(path)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// mysqlWithCA returns dsn set to connect over TLS, verifying the server
// against the CAs in caFile: the driver knows TLS settings by name, so the
// configuration is registered under a name derived from the file's path.
// An empty dsn stays empty. It returns an error naming setting when the
// DSN does not parse or the file cannot be read.
func mysqlWithCA(setting, dsn, caFile string) (string, error) {
	if dsn == "" || caFile == "" {
		return dsn, nil
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	tc, err := tlsWithCA(caFile)
	if err != nil {
		return "", fmt.Errorf("--mysql-ca-file: %w", err)
	}
	sum := sha256.Sum256([]byte(caFile))
	name := "tagcount-ca-" + hex.EncodeToString(sum[:8])
	if err := mysql.RegisterTLSConfig(name, tc); err != nil {
		return "", fmt.Errorf("--mysql-ca-file: %w", err)
	}
	cfg.TLSConfig = name
	return cfg.FormatDSN(), nil
}

// kafkaSettings are the Kafka credentials and TLS settings
// (counter.KafkaSecurity); the zero value is plaintext without SASL.
type kafkaSettings struct {
	SASLMechanism      string
	Username, Password string
	TLS                bool
	CAFile             string
	security           counter.KafkaSecurity // built by validate
}

func (k *kafkaSettings) register(fs *flag.FlagSet) {
	fs.StringVar(&k.SASLMechanism, "kafka-sasl-mechanism", "", "SASL mechanism for Kafka: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty = no SASL")
	fs.StringVar(&k.Username, "kafka-username", "", "Kafka SASL user name")
	fs.StringVar(&k.Password, "kafka-password", "", "Kafka SASL password")
	fs.BoolVar(&k.TLS, "kafka-tls", false, "connect to Kafka over TLS (implied by --kafka-ca-file)")
	fs.StringVar(&k.CAFile, "kafka-ca-file", "", "PEM file of the CAs that sign the brokers' certificates; empty = the system's roots")
}

// validate builds the security settings. It returns an error naming the
// flag when the mechanism is unknown, a user name is missing, or the CA
// file cannot be read.
func (k *kafkaSettings) validate() error {
	k.security = counter.KafkaSecurity{SASLMechanism: k.SASLMechanism, Username: k.Username, Password: k.Password}
	if err := k.security.Check(); err != nil {
		return err
	}
	switch {
	case k.CAFile != "":
		tc, err := tlsWithCA(k.CAFile)
		if err != nil {
			return fmt.Errorf("--kafka-ca-file: %w", err)
		}
		k.security.TLS = tc
	case k.TLS:
		k.security.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return nil
}

// secure checks the connection settings and applies --mysql-ca-file to the
// DSNs. It returns an error naming the flag at fault.
func (s *settings) secure() error {
	s.Redis.Addr = s.RedisAddr
	if _, err := s.Redis.options(); err != nil {
		return err
	}
	var err error
	if s.MySQLDSN, err = mysqlWithCA("--mysql-dsn", s.MySQLDSN, s.MySQLCAFile); err != nil {
		return err
	}
	if s.ReconcileReadDSN, err = mysqlWithCA("--reconcile-read-dsn", s.ReconcileReadDSN, s.MySQLCAFile); err != nil {
		return err
	}
	return s.Kafka.validate()
}
