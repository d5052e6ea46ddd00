package notify_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/stages/notify"
)

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// authSession is a mailSession that requires AUTH PLAIN.
type authSession struct {
	mailSession
	conn   *smtp.Conn
	authed bool
}

func (s *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *authSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if _, tlsOn := s.conn.TLSConnectionState(); !tlsOn {
			return errors.New("TLS first")
		}
		if user != "notify" || pass != "smtp-pass" {
			// What real servers answer: 535 5.7.8, permanent.
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}

func (s *authSession) Mail(from string, opts *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	return s.mailSession.Mail(from, opts)
}

// TestEmailStartTLSIntegration sends through a server that offers STARTTLS
// and requires AUTH PLAIN over TLS: the default security, starttls.
func TestEmailStartTLSIntegration(t *testing.T) {
	e := newEnv(t)
	cert, roots := selfSigned(t)
	ms := &mailServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &authSession{mailSession: mailSession{srv: ms}, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ms.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	cfg := testConfig().Email
	cfg.Host, cfg.Port = ms.hostPort(t)
	cfg.Security, cfg.Username, cfg.Password = "starttls", "notify", config.Secret("smtp-pass")
	em, err := notify.NewEmail(cfg)
	require.NoError(t, err)
	em.WithTLSConfig(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	id, err := em.Send(e.ctx, notify.Delivery{NotificationID: "tls-1", Destination: "ana@example.cl", Subject: "Hola",
		Body: "Cuerpo con acentos: ñandú", CreatedAt: time.Now()})
	require.NoError(t, err)
	require.Equal(t, "<"+em.MessageID("tls-1")+">", id)
	require.Len(t, ms.messages(), 1)

	// A wrong password is refused by the server with 535: permanent.
	cfg.Password = "wrong"
	em, err = notify.NewEmail(cfg)
	require.NoError(t, err)
	em.WithTLSConfig(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	_, err = em.Send(e.ctx, notify.Delivery{NotificationID: "tls-2", Destination: "ana@example.cl", Subject: "x", Body: "x"})
	require.Error(t, err)
	require.True(t, notify.IsPermanent(err), "%v", err)

	// An untrusted certificate is not accepted (retried: the operator
	// may fix the server).
	cfg.Password = "smtp-pass"
	em, err = notify.NewEmail(cfg)
	require.NoError(t, err)
	_, err = em.Send(e.ctx, notify.Delivery{NotificationID: "tls-3", Destination: "ana@example.cl", Subject: "x", Body: "x"})
	require.Error(t, err)
	require.Len(t, ms.messages(), 1)
}
