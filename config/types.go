package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a string in YAML and in the
// environment ("30s", "1h30m").
type Duration time.Duration

// UnmarshalYAML decodes a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a duration string such as \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"30s\" or \"1h\"; got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML encodes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String returns the duration as time.Duration prints it.
func (d Duration) String() string { return time.Duration(d).String() }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Secret is a string that never prints: String, fmt verbs, YAML output and
// slog all show "<redacted>". Use Reveal where the value itself is needed.
type Secret string

const redacted = "<redacted>"

// String returns "<redacted>" (or "" for an empty secret).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return fmt.Sprintf("config.Secret(%q)", s.String()) }

// LogValue keeps slog from printing the secret.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML writes the redacted form, so a dumped config holds no secret.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText writes the redacted form, so encoding/json and slog's JSON
// handler never see the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// SecretURL is a connection URL that may carry a password: it prints with
// the password replaced by "xxxxx" (and fully redacted when it is not a URL),
// so the host and database stay visible. Use Reveal to connect.
type SecretURL string

// String returns the URL with its password masked.
func (s SecretURL) String() string {
	if s == "" {
		return ""
	}
	return RedactURL(string(s))
}

// GoString keeps %#v from printing the password.
func (s SecretURL) GoString() string { return fmt.Sprintf("config.SecretURL(%q)", s.String()) }

// LogValue keeps slog from printing the password.
func (s SecretURL) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML writes the masked form.
func (s SecretURL) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText writes the masked form (encoding/json, slog's JSON handler).
func (s SecretURL) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the URL itself.
func (s SecretURL) Reveal() string { return string(s) }

// RedactURL returns a connection URL with its password replaced, for display.
// A string that is not a URL (a libpq key=value string) is fully redacted
// unless it carries no password.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		if !strings.Contains(raw, "password") {
			return raw // a key=value string without a password
		}
		return redacted
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// FieldError is one configuration problem: the key it concerns and what is
// wrong with it.
type FieldError struct {
	Key string
	Msg string
}

// Error returns "key: message".
func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// problems collects every FieldError of one load.
type problems struct{ errs []error }

func (p *problems) addf(key, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) positive(key string, d Duration) {
	if d <= 0 {
		p.addf(key, "must be a positive duration; got %s", d)
	}
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// Problems splits an error returned by [Load] or [Config.Validate] into its
// individual problems, each naming its key.
func Problems(err error) []error {
	if err == nil {
		return nil
	}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		var out []error
		for _, e := range joined.Unwrap() {
			out = append(out, Problems(e)...)
		}
		return out
	}
	return []error{err}
}
