package compliance

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/stackvps/stackvps/config"
)

// Credentials are what a regulator authenticates an informant with: DGA's
// rutUsuario is in Params, its portal password here; SMA's usuario and
// password both here. String, GoString, slog and JSON never show the
// password.
type Credentials struct {
	Username string
	Password string
}

const redactedPassword = "****"

// String shows the username and hides the password.
func (c Credentials) String() string {
	return fmt.Sprintf("{Username:%s Password:%s}", c.Username, c.redacted())
}

// GoString keeps %#v from printing the password.
func (c Credentials) GoString() string {
	return fmt.Sprintf("compliance.Credentials{Username:%q, Password:%q}", c.Username, c.redacted())
}

// LogValue keeps slog from printing the password.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username), slog.String("password", c.redacted()))
}

// MarshalJSON writes the password redacted, so a Slot or Credentials
// logged or encoded as JSON holds no secret. Sealer uses its own encoding.
func (c Credentials) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}{c.Username, c.redacted()})
}

func (c Credentials) redacted() string {
	if c.Password == "" {
		return ""
	}
	return redactedPassword
}

// sealedVersion is the first byte of every sealed value: the format
// (1 = AES-256-GCM, 12-byte random nonce, JSON plaintext).
const sealedVersion byte = 1

// ErrWrongKey is returned by Open when the value was sealed with another
// key or has been altered.
var ErrWrongKey = errors.New("credentials cannot be opened: wrong compliance.credentials_key or tampered data")

// A Sealer encrypts credentials for compliance_configs.credentials with
// AES-256-GCM. Sealed values are: a version byte, a random 12-byte nonce,
// the ciphertext and tag; the version byte is authenticated too. Safe for
// concurrent use.
type Sealer struct {
	aead cipher.AEAD
	rand io.Reader
}

// NewSealer builds a Sealer from compliance.credentials_key: base64
// (standard encoding) of exactly 32 bytes.
func NewSealer(key config.Secret) (*Sealer, error) {
	if key == "" {
		return nil, errors.New("compliance.credentials_key: is empty; set STACKVPS_COMPLIANCE_CREDENTIALS_KEY to base64 of 32 random bytes")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key.Reveal()))
	if err != nil {
		return nil, errors.New("compliance.credentials_key: is not base64 (standard encoding)")
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("compliance.credentials_key: must decode to 32 bytes (AES-256); got %d", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("compliance.credentials_key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("compliance.credentials_key: %w", err)
	}
	return &Sealer{aead: aead, rand: rand.Reader}, nil
}

type sealedCredentials struct {
	Username string `json:"u"`
	Password string `json:"p"`
}

// Seal encrypts c.
func (s *Sealer) Seal(c Credentials) ([]byte, error) {
	plain, err := json.Marshal(sealedCredentials(c))
	if err != nil {
		return nil, fmt.Errorf("encoding credentials: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := io.ReadFull(s.rand, nonce); err != nil {
		return nil, fmt.Errorf("reading a nonce: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(plain)+s.aead.Overhead())
	out = append(append(out, sealedVersion), nonce...)
	return s.aead.Seal(out, nonce, plain, []byte{sealedVersion}), nil
}

// Open decrypts a value Seal returned. A value sealed with another key, or
// altered, fails with ErrWrongKey; an unknown format says so.
func (s *Sealer) Open(b []byte) (Credentials, error) {
	ns := s.aead.NonceSize()
	if len(b) == 0 {
		return Credentials{}, errors.New("opening credentials: empty value")
	}
	if b[0] != sealedVersion {
		return Credentials{}, fmt.Errorf("opening credentials: unknown format version %d", b[0])
	}
	if len(b) < 1+ns+s.aead.Overhead() {
		return Credentials{}, fmt.Errorf("opening credentials: %d bytes is too short", len(b))
	}
	plain, err := s.aead.Open(nil, b[1:1+ns], b[1+ns:], b[:1])
	if err != nil {
		return Credentials{}, ErrWrongKey
	}
	var c sealedCredentials
	if err := json.Unmarshal(plain, &c); err != nil {
		return Credentials{}, fmt.Errorf("opening credentials: decoding: %w", err)
	}
	return Credentials(c), nil
}
