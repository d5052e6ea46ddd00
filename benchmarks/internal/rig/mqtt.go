package rig

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/simulate"
)

// Inflight is how many QoS 1 publishes the load generator keeps
// outstanding: as many as Mosquitto's max_inflight_messages (1000 in
// deploy/local), so the broker, not the publisher, sets the pace.
const Inflight = 1000

// Connect opens an MQTT v5 connection and waits until it is up.
func Connect(ctx context.Context, cfg config.MQTT, opts mqttclient.Options) (*autopaho.ConnectionManager, error) {
	cc, err := mqttclient.ClientConfig(cfg, opts)
	if err != nil {
		return nil, err
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		return nil, err
	}
	if err := cm.AwaitConnection(ctx); err != nil {
		return nil, fmt.Errorf("connecting to mqtt: %w", err)
	}
	return cm, nil
}

// Publisher is the load generator: one MQTT connection with a clean,
// throwaway session publishing at QoS 1.
type Publisher struct {
	cm *autopaho.ConnectionManager
}

// NewPublisher connects a publisher with client id clientID.
func NewPublisher(ctx context.Context, cfg config.MQTT, clientID string) (*Publisher, error) {
	cm, err := Connect(ctx, cfg, mqttclient.Options{ClientID: clientID, CleanStart: true, SessionExpiry: -1})
	if err != nil {
		return nil, err
	}
	return &Publisher{cm: cm}, nil
}

// Close disconnects.
func (p *Publisher) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.cm.Disconnect(ctx)
}

// Publish sends one message at QoS 1 and returns once the broker
// acknowledged it, retrying (the load generator must not be what loses a
// message) until ctx ends.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte) error {
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := p.cm.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt >= 20 {
			return fmt.Errorf("publishing to %s: %w", topic, err)
		}
		_ = p.cm.AwaitConnection(ctx)
	}
}

// PublishAll publishes msgs in order with up to inflight publishes
// outstanding and returns once the broker acknowledged every one.
func (p *Publisher) PublishAll(ctx context.Context, msgs []simulate.Message, inflight int) error {
	var (
		next int64 = -1
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
	)
	for range min(inflight, len(msgs)) {
		wg.Go(func() {
			for {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(len(msgs)) {
					return
				}
				if err := p.Publish(ctx, msgs[i].Topic, msgs[i].Payload); err != nil {
					mu.Lock()
					errs = errors.Join(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// Subscriber is the raw limit of MQTT delivery: a bare paho.golang QoS 1
// subscriber that acknowledges each message as soon as its handler (a
// counter) returns.
type Subscriber struct {
	cm       *autopaho.ConnectionManager
	received atomic.Int64
	mu       sync.Mutex
	want     int64
	reached  chan time.Time
}

// Subscribe connects a subscriber with a clean session, announcing
// receiveMax as its Receive Maximum (the bridge's bridge.receive_maximum), and
// subscribes to filter at QoS 1, returning once the broker granted it.
func Subscribe(ctx context.Context, cfg config.MQTT, clientID, filter string, receiveMax uint16) (*Subscriber, error) {
	s := &Subscriber{}
	cm, err := Connect(ctx, cfg, mqttclient.Options{
		ClientID: clientID, CleanStart: true, SessionExpiry: -1, ReceiveMaximum: receiveMax,
		OnPublish: func(autopaho.PublishReceived) (bool, error) {
			n := s.received.Add(1)
			s.mu.Lock()
			if s.reached != nil && n >= s.want {
				s.reached <- time.Now()
				s.reached = nil
			}
			s.mu.Unlock()
			return true, nil
		},
	})
	if err != nil {
		return nil, err
	}
	s.cm = cm
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("subscribing to %s: %w", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		s.Close()
		return nil, fmt.Errorf("subscription to %s refused: %v", filter, sa.Reasons)
	}
	return s, nil
}

// Expect arms the subscriber: the returned channel receives the moment the
// n-th message (counted since Subscribe) arrived.
func (s *Subscriber) Expect(n int64) <-chan time.Time {
	ch := make(chan time.Time, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.received.Load() >= n {
		ch <- time.Now()
		return ch
	}
	s.want, s.reached = n, ch
	return ch
}

// Received returns the messages received so far.
func (s *Subscriber) Received() int64 { return s.received.Load() }

// Close disconnects; the session ends with the connection.
func (s *Subscriber) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.cm.Disconnect(ctx)
}

// MQTTDelivery measures the raw limit of the first hop: the stream msgs is
// published (QoS 1, Inflight outstanding) to a bare subscriber on filter (a
// fresh shared-subscription group when filter starts with $share), and the
// result is the time from the first publish to the last message received.
func MQTTDelivery(ctx context.Context, cfg config.MQTT, clientID, filter string, receiveMax uint16, msgs []simulate.Message) (time.Duration, error) {
	sub, err := Subscribe(ctx, cfg, clientID+"-sub", filter, receiveMax)
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	pub, err := NewPublisher(ctx, cfg, clientID+"-pub")
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	reached := sub.Expect(int64(len(msgs)))
	start := time.Now()
	if err := pub.PublishAll(ctx, msgs, Inflight); err != nil {
		return 0, err
	}
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case end := <-reached:
		return end.Sub(start), nil
	case <-wait.Done():
		return 0, fmt.Errorf("bare subscriber received %d of %d messages: %w", sub.Received(), len(msgs), wait.Err())
	}
}

// DropSession ends the persistent session of clientID (connect with a clean
// start and no expiry, then disconnect) so the broker stops queueing for it.
func DropSession(cfg config.MQTT, clientID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cm, err := Connect(ctx, cfg, mqttclient.Options{ClientID: clientID, CleanStart: true, SessionExpiry: -1})
	if err != nil {
		return
	}
	_ = cm.Disconnect(ctx)
}
