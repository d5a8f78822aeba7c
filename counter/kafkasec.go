package counter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// KafkaSecurity is how the counter's readers, writers and admin calls
// authenticate to Kafka and encrypt the connection. The zero value is
// plaintext without SASL (the embedded broker, a local Kafka).
type KafkaSecurity struct {
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty = no
	// SASL. Username and Password are its credentials.
	SASLMechanism      string
	Username, Password string
	// TLS, when set, is the client's TLS configuration (its RootCAs the
	// brokers' CAs, nil = the system's).
	TLS *tls.Config
}

// Check returns an error naming the flag when the mechanism is unknown or
// a mechanism has no user name.
func (k KafkaSecurity) Check() error {
	_, err := k.mechanism()
	return err
}

// mechanism returns the SASL mechanism, or nil without SASL.
func (k KafkaSecurity) mechanism() (sasl.Mechanism, error) {
	if k.SASLMechanism == "" {
		return nil, nil
	}
	if k.Username == "" {
		return nil, fmt.Errorf("--kafka-username is required with --kafka-sasl-mechanism %s", k.SASLMechanism)
	}
	switch k.SASLMechanism {
	case "PLAIN":
		return plain.Mechanism{Username: k.Username, Password: k.Password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, k.Username, k.Password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, k.Username, k.Password)
	}
	return nil, fmt.Errorf("--kafka-sasl-mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not %q", k.SASLMechanism)
}

// transport returns a transport (writers, admin calls) with k's SASL and TLS.
// A mechanism Check refuses is left out: the broker then refuses the
// connection, naming the problem.
func (k KafkaSecurity) transport() *kafka.Transport {
	m, _ := k.mechanism()
	return &kafka.Transport{SASL: m, TLS: k.TLS}
}

// dialer returns a dialer (readers, the consumer group) with k's SASL and TLS.
func (k KafkaSecurity) dialer() *kafka.Dialer {
	m, _ := k.mechanism()
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, SASLMechanism: m, TLS: k.TLS}
}

// checkLogin dials the brokers as the readers do, because kafka-go's
// transport (writers, admin calls) reports a refused login or certificate
// only as "broker not available", retried until the deadline. It returns
// an error naming the setting when the first broker that answers refuses
// the credentials or is not trusted, and nil otherwise (an unreachable
// broker is left to the caller's retries).
func (k KafkaSecurity) checkLogin(ctx context.Context, brokers []string) error {
	if k.SASLMechanism == "" && k.TLS == nil {
		return nil
	}
	var err error
	for _, b := range brokers {
		var c *kafka.Conn
		if c, err = k.dialer().DialContext(ctx, "tcp", b); err == nil {
			return c.Close()
		}
		if named := k.explain(err); named != err {
			return named
		}
	}
	return nil
}

// explain names the setting to look at when err is the broker refusing
// the credentials or the client refusing the broker's certificate, and
// returns err itself otherwise.
func (k KafkaSecurity) explain(err error) error {
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	switch {
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Errorf("the broker refused --kafka-username/--kafka-password (%s): %w", k.SASLMechanism, err)
	case errors.Is(err, kafka.UnsupportedSASLMechanism), errors.Is(err, kafka.IllegalSASLState):
		return fmt.Errorf("the broker refused --kafka-sasl-mechanism %s: %w", k.SASLMechanism, err)
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &hostname):
		return fmt.Errorf("the broker's certificate is not trusted (--kafka-ca-file): %w", err)
	}
	return err
}
