package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// testCA is a certificate authority made for one test, with a server
// certificate for 127.0.0.1 that it signed, all written as PEM files.
type testCA struct {
	CAFile, CertFile, KeyFile string
	server                    tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tagcount test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	ca := testCA{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	writePEM(t, ca.CAFile, "CERTIFICATE", caDER)
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	writePEM(t, ca.KeyFile, "PRIVATE KEY", keyDER)
	if ca.server, err = tls.LoadX509KeyPair(ca.CertFile, ca.KeyFile); err != nil {
		t.Fatal(err)
	}
	return ca
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startSecuredRedis starts a redis-server that serves only TLS, with
// certificates from ca, and requires password; it returns its TLS port.
func startSecuredRedis(t *testing.T, ca testCA, password string) int {
	t.Helper()
	port := testdb.FreePort(t)
	testdb.StartProcess(t, "redis-server", "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", ca.CertFile, "--tls-key-file", ca.KeyFile, "--tls-ca-cert-file", ca.CAFile,
		"--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no")
	waitForPort(t, port)
	return port
}

// startTLSMariaDB starts a private mariadbd that refuses connections
// without TLS, with certificates from ca; it returns its port.
func startTLSMariaDB(t *testing.T, ca testCA) int {
	t.Helper()
	port := testdb.FreePort(t)
	testdb.StartMariaDB(t, port, "--ssl-cert="+ca.CertFile, "--ssl-key="+ca.KeyFile, "--ssl-ca="+ca.CAFile, "--require-secure-transport=ON")
	waitForPort(t, port)
	return port
}

// startSecuredKafka starts a kfake broker that serves TLS with ca's
// certificate and requires SASL; user/password log in with SCRAM-SHA-512
// and plainUser/password with PLAIN.
func startSecuredKafka(t *testing.T, ca testCA, user, plainUser, password string) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", user, password), kfake.Superuser("PLAIN", plainUser, password),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// waitForPort polls until something accepts connections on port.
func waitForPort(t *testing.T, port int) {
	t.Helper()
	testdb.WaitFor(t, 60*time.Second, fmt.Sprintf("a server on port %d", port), func() bool {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// parseSettings parses args as the api command does, or fails the test.
func parseSettings(t *testing.T, args ...string) settings {
	t.Helper()
	var s settings
	if _, err := parse("api", args, io.Discard, &s, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecuredRedisKafkaAndMySQLCarryAPostFromDraftToCount(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	redisPort := startSecuredRedis(t, ca, "redis-pw")
	broker := startSecuredKafka(t, ca, "counter", "plain", "kafka-pw")
	mysqlPort := startTLSMariaDB(t, ca)
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/tagcount?parseTime=true", mysqlPort)
	// The MariaDB may still be starting up: its port opens before root may log in.
	s := parseSettings(t, "--redis-url-file", writeSecret(t, fmt.Sprintf("rediss://:redis-pw@127.0.0.1:%d/3", redisPort)),
		"--redis-ca-file", ca.CAFile, "--mysql-dsn-file", writeSecret(t, dsn), "--mysql-ca-file", ca.CAFile,
		"--kafka-brokers", broker, "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-username", "counter",
		"--kafka-password-file", writeSecret(t, "kafka-pw"), "--kafka-ca-file", ca.CAFile)
	waitForMySQL(t, s.MySQLDSN)

	st := testStack(t, stackOptions{Path: "new", MySQLDSN: s.MySQLDSN, Redis: s.Redis, Brokers: s.brokers(), Kafka: s.Kafka.security})
	if st.redisOpt.DB != 3 || st.redisOpt.TLSConfig == nil {
		t.Fatalf("Redis options %+v; want database 3 over TLS", st.redisOpt)
	}
	c := st.client(t, 42, httpapi.RoleAuthor)
	status, d, _ := c.do("POST", "/v1/drafts", draftBody("Secured", "Secured e2e tag"))
	if status != 201 {
		t.Fatalf("create draft: %d %v", status, d)
	}
	if status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
		t.Fatalf("post: %d %v; want 202", status, res)
	}
	// Posted means asynq's job ran (Redis), the count means the event went
	// through Kafka to the counter (writer, consumer group, readers).
	testdb.WaitFor(t, 30*time.Second, "the tag's count to show the post", func() bool {
		s, tag, _ := c.do("GET", "/v1/tags?type=freeform&name=secured%20e2e%20tag", nil)
		return s == 200 && tag["count"] == float64(1)
	})
	var tlsVersion string
	if err := st.DB.QueryRowContext(context.Background(), "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'").Scan(&tlsVersion); err != nil || tlsVersion == "" {
		t.Errorf("MySQL session's TLS version %q (%v); want TLS", tlsVersion, err)
	}
}

// waitForMySQL polls until dsn's server lets root in.
func waitForMySQL(t *testing.T, dsn string) {
	t.Helper()
	testdb.WaitFor(t, 60*time.Second, "the TLS MariaDB to let root in", func() bool {
		db, err := sql.Open("mysql", strings.Replace(dsn, "/tagcount?", "/?", 1))
		if err != nil {
			return false
		}
		defer db.Close()
		return db.Ping() == nil
	})
}

func TestWrongRedisCredentialsFailNamingTheSetting(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t), newTestCA(t)
	port := startSecuredRedis(t, ca, "redis-pw")
	for _, tc := range []struct {
		name, url, caFile, want string
	}{
		{"wrong password", fmt.Sprintf("rediss://:nope@127.0.0.1:%d/0", port), ca.CAFile, "WRONGPASS"},
		{"no password", fmt.Sprintf("rediss://127.0.0.1:%d/0", port), ca.CAFile, "NOAUTH"},
		{"another CA", fmt.Sprintf("rediss://:redis-pw@127.0.0.1:%d/0", port), other.CAFile, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := parseSettings(t, "--redis-url", tc.url, "--redis-ca-file", tc.caFile)
			o, err := s.Redis.options()
			if err != nil {
				t.Fatal(err)
			}
			err = pingRedis(context.Background(), s.Redis, o)
			if err == nil || !strings.Contains(err.Error(), "redis: --redis-url") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ping: %v; want an error naming --redis-url and saying %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "redis-pw") {
				t.Fatalf("the error %q shows the password", err)
			}
		})
	}
	t.Run("right password", func(t *testing.T) {
		s := parseSettings(t, "--redis-url", fmt.Sprintf("rediss://:redis-pw@127.0.0.1:%d/0", port), "--redis-ca-file", ca.CAFile)
		o, _ := s.Redis.options()
		if err := pingRedis(context.Background(), s.Redis, o); err != nil {
			t.Fatal(err)
		}
		client := redis.NewClient(o)
		defer client.Close()
		if err := client.Set(context.Background(), "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWrongKafkaCredentialsFailNamingTheSetting(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t), newTestCA(t)
	broker := startSecuredKafka(t, ca, "counter", "plain", "kafka-pw")
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = connects
	}{
		{"SCRAM-SHA-512", []string{"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-username", "counter", "--kafka-password", "kafka-pw", "--kafka-ca-file", ca.CAFile}, ""},
		{"PLAIN", []string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-username", "plain", "--kafka-password", "kafka-pw", "--kafka-ca-file", ca.CAFile}, ""},
		{"wrong password", []string{"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-username", "counter", "--kafka-password", "nope", "--kafka-ca-file", ca.CAFile}, "--kafka-password"},
		{"another CA", []string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-username", "plain", "--kafka-password", "kafka-pw", "--kafka-ca-file", other.CAFile}, "--kafka-ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := parseSettings(t, append([]string{"--kafka-brokers", broker}, tc.args...)...)
			err := s.Kafka.security.EnsureTopic(context.Background(), s.brokers(), "secured-"+strings.ReplaceAll(tc.name, " ", "-"), 2)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create topic: %v; want an error naming %s", err, tc.want)
			}
		})
	}
	t.Run("unknown mechanism", func(t *testing.T) {
		var s settings
		_, err := parse("counter", []string{"--kafka-sasl-mechanism", "GSSAPI", "--kafka-username", "u"}, io.Discard, &s, nil)
		if err == nil || !strings.Contains(err.Error(), "--kafka-sasl-mechanism") {
			t.Fatalf("parse: %v; want an error naming --kafka-sasl-mechanism", err)
		}
	})
}

func TestWrongMySQLCredentialsFailNamingTheSetting(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t), newTestCA(t)
	port := startTLSMariaDB(t, ca)
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/tagcount?parseTime=true", port)
	waitForMySQL(t, parseSettings(t, "--mysql-dsn", dsn, "--mysql-ca-file", ca.CAFile).MySQLDSN)
	for _, tc := range []struct {
		name, dsn, caFile, want string
	}{
		{"another CA", dsn, other.CAFile, "certificate"},
		// MariaDB answers a plaintext login to a server requiring TLS with
		// "access denied", as it does a wrong password.
		{"no TLS", dsn, "", "Access denied"},
		{"wrong password", strings.Replace(dsn, "root@", "root:nope@", 1), ca.CAFile, "Access denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := parseSettings(t, "--mysql-dsn", tc.dsn, "--mysql-ca-file", tc.caFile)
			st, err := startStack(context.Background(), stackOptions{MySQLDSN: s.MySQLDSN, Create: true,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				st.Close()
				t.Fatal("started; want an error")
			}
			if !strings.Contains(err.Error(), "--mysql-dsn") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v; want an error naming --mysql-dsn and saying %s", err, tc.want)
			}
		})
	}
}

func TestSecretFilesFillTheirSettings(t *testing.T) {
	t.Parallel()
	s := parseSettings(t, "--auth-secret-file", writeSecret(t, "from-a-file-from-a-file-from-a-file"))
	if s.AuthSecret != "from-a-file-from-a-file-from-a-file" {
		t.Fatalf("auth secret %q; want the file's content without its newline", s.AuthSecret)
	}
	var s2 settings
	_, err := parse("api", []string{"--auth-secret", "x", "--auth-secret-file", writeSecret(t, "y")}, io.Discard, &s2, nil)
	if err == nil || !strings.Contains(err.Error(), "--auth-secret-file") {
		t.Fatalf("both set: %v; want an error naming both", err)
	}
	_, err = parse("api", []string{"--redis-url-file", filepath.Join(t.TempDir(), "missing")}, io.Discard, &s2, nil)
	if err == nil || !strings.Contains(err.Error(), "--redis-url-file") {
		t.Fatalf("missing file: %v; want an error naming --redis-url-file", err)
	}
}
