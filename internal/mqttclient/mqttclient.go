// Package mqttclient builds paho.golang (autopaho) MQTT v5 connections from
// the mqtt configuration section, for the bridge, the simulator and doctor.
package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/stackvps/stackvps/config"
)

// Options adjust a connection beyond the configuration.
type Options struct {
	// ClientID overrides cfg.EffectiveClientID().
	ClientID string
	// CleanStart discards any session the broker holds for the client id.
	// The bridge keeps it false so QoS 1 messages queued while it was away
	// are delivered.
	CleanStart bool
	// SessionExpiry overrides cfg.SessionExpiry; a negative value means 0
	// (the session ends with the connection).
	SessionExpiry time.Duration
	// ReceiveMaximum, when positive, is announced in CONNECT: the broker
	// sends at most this many unacknowledged QoS 1/2 messages.
	ReceiveMaximum uint16
	// ManualAck defers PUBACK until the handler calls Ack.
	ManualAck bool
	// OnPublish handles inbound messages; it must not block.
	OnPublish func(autopaho.PublishReceived) (bool, error)
	// OnUp is called on every (re)connection with the CONNACK.
	OnUp func(*autopaho.ConnectionManager, *paho.Connack)
	// OnConnectError is called for every failed attempt.
	OnConnectError func(error)
	// Log receives connection errors; nil is silent.
	Log *slog.Logger
}

// ClientConfig returns the autopaho configuration for cfg and opts.
func ClientConfig(cfg config.MQTT, opts Options) (autopaho.ClientConfig, error) {
	u, err := cfg.URL()
	if err != nil {
		return autopaho.ClientConfig{}, fmt.Errorf("mqtt.broker: %w", err)
	}
	server := *u
	switch server.Scheme {
	case "mqtt":
		server.Scheme = "tcp"
	case "mqtts", "ssl":
		server.Scheme = "tls"
	}
	clientID := opts.ClientID
	if clientID == "" {
		clientID = cfg.EffectiveClientID()
	}
	expiry := cfg.SessionExpiry.Std()
	if opts.SessionExpiry > 0 {
		expiry = opts.SessionExpiry
	} else if opts.SessionExpiry < 0 {
		expiry = 0
	}
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{&server},
		KeepAlive:                     uint16(cfg.KeepAlive.Std() / time.Second),
		CleanStartOnInitialConnection: opts.CleanStart,
		SessionExpiryInterval:         uint32(expiry / time.Second),
		ConnectTimeout:                cfg.ConnectTimeout.Std(),
		ReconnectBackoff:              autopaho.NewExponentialBackoff(250*time.Millisecond, 5*time.Second, time.Second, 2),
		ConnectUsername:               cfg.Username,
		ConnectPassword:               []byte(cfg.Password.Reveal()),
		OnConnectionUp:                opts.OnUp,
		OnConnectError:                opts.OnConnectError,
		ClientConfig: paho.ClientConfig{
			ClientID:                   clientID,
			EnableManualAcknowledgment: opts.ManualAck,
			SendAcksInterval:           20 * time.Millisecond,
		},
	}
	if server.Scheme == "tls" || server.Scheme == "wss" {
		cc.TlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: server.Hostname()}
	}
	if opts.OnPublish != nil {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				return opts.OnPublish(autopaho.PublishReceived{PublishReceived: pr})
			},
		}
	}
	if opts.ReceiveMaximum > 0 {
		rm := opts.ReceiveMaximum
		cc.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		}
	}
	if opts.Log != nil {
		cc.Errors = slogPrinter{opts.Log}
		cc.PahoErrors = slogPrinter{opts.Log}
	}
	return cc, nil
}

// Ping connects once with a throwaway clean session and disconnects; it
// returns why the connection failed (refused, bad credentials, timeout).
func Ping(ctx context.Context, cfg config.MQTT) error {
	var mu sync.Mutex
	var last error
	cc, err := ClientConfig(cfg, Options{
		ClientID:      fmt.Sprintf("stackvps-doctor-%d", time.Now().UnixNano()),
		CleanStart:    true,
		SessionExpiry: -1,
		OnConnectError: func(err error) {
			mu.Lock()
			last = err
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cm, err := autopaho.NewConnection(cctx, cc)
	if err != nil {
		return fmt.Errorf("connecting to mqtt: %w", err)
	}
	if err := cm.AwaitConnection(ctx); err != nil {
		mu.Lock()
		defer mu.Unlock()
		if last != nil {
			var ce *autopaho.ConnackError
			if errors.As(last, &ce) {
				return fmt.Errorf("broker refused the connection: %s (reason %d)", ce.Reason, ce.ReasonCode)
			}
			return fmt.Errorf("connecting to mqtt: %w", last)
		}
		return fmt.Errorf("connecting to mqtt: %w", err)
	}
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer dcancel()
	_ = cm.Disconnect(dctx)
	return nil
}

// slogPrinter adapts slog to paho's log.Logger.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Warn("mqtt", "detail", fmt.Sprint(v...)) }

func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Warn("mqtt", "detail", fmt.Sprintf(format, v...))
}
