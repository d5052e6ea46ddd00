package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// Producer sends records to Kafka; *pipeline.Producer implements it.
type Producer interface {
	Produce(ctx context.Context, r pipeline.Record, ack func(error))
}

// NotificationEncoder encodes notifications (Avro); the codec of
// schemas.NewNotificationCodec implements it.
type NotificationEncoder interface {
	Encode(n *schemas.Notification) ([]byte, error)
}

// Notifier writes notifications to the notifications topic, keyed by user
// id, and waits for Kafka's acknowledgements. Notification ids are
// deterministic, so a period run again (retry, takeover) produces the same
// ids and the notify stage delivers each once.
type Notifier struct {
	Producer Producer
	Encoder  NotificationEncoder
	// Topic is the notifications topic.
	Topic string
}

// Send produces every notification and returns once all are acknowledged,
// or with the errors of those that were not.
func (n *Notifier) Send(ctx context.Context, ns []schemas.Notification) error {
	if len(ns) == 0 {
		return nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range ns {
		v, err := n.Encoder.Encode(&ns[i])
		if err != nil {
			return fmt.Errorf("encoding notification %s: %w", ns[i].ID, err)
		}
		wg.Add(1)
		id := ns[i].ID
		n.Producer.Produce(ctx, pipeline.Record{Topic: n.Topic, Key: []byte(ns[i].UserID), Value: v}, func(err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("producing notification %s: %w", id, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
