package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stackvps/stackvps/config"
)

// TopicSpec is a topic to create.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16 // -1 takes the broker default
	Configs           map[string]string
}

// TopicState is what exists of one topic.
type TopicState struct {
	Name              string
	Partitions        int
	ReplicationFactor int
	// Created is true when EnsureTopics created it.
	Created bool
	// Missing is true when the topic does not exist (DescribeTopics).
	Missing bool
	// Note says what differs from the spec, for the operator to decide.
	Note string
}

// ContractTopics returns the topics of DESIGN.md as the configuration wants
// them. Dead-letter topics keep their records as long as the raw topic, so a
// bad payload can be replayed after the fix.
func ContractTopics(k config.Kafka) []TopicSpec {
	retention := strconv.FormatInt(k.Retention.Std().Milliseconds(), 10)
	base := map[string]string{
		"retention.ms":   retention,
		"cleanup.policy": "delete",
	}
	if k.ReplicationFactor >= 3 {
		// With acks=all, one replica down must not stop producers.
		base["min.insync.replicas"] = "2"
	}
	specs := make([]TopicSpec, 0, len(k.Topics.All()))
	for _, name := range k.Topics.All() {
		cfgs := make(map[string]string, len(base))
		for kk, v := range base {
			cfgs[kk] = v
		}
		specs = append(specs, TopicSpec{
			Name:              name,
			Partitions:        int32(k.Partitions),
			ReplicationFactor: int16(k.ReplicationFactor),
			Configs:           cfgs,
		})
	}
	return specs
}

func adminClient(k config.Kafka, extra ...kgo.Opt) (*kadm.Client, error) {
	// kadm answers ListTopics from metadata the client cached for up to
	// MetadataMinAge (5 s by default), a topic's absence included: a topic
	// described as missing, then created, stayed missing for up to 5 s,
	// and EnsureTopics waited that long for each new topic. An admin
	// client lives for one call, so the cache saves it nothing.
	opts := append(clientOpts(k, k.ClientID+"-admin"), kgo.MetadataMinAge(10*time.Millisecond))
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka admin client: %w", err)
	}
	return kadm.NewClient(cl), nil
}

// EnsureTopics creates the topics that do not exist and reports every one.
// An existing topic is left as it is (adding partitions would move keys to
// other partitions and break per-device order); differences are in Note.
func EnsureTopics(ctx context.Context, k config.Kafka, specs []TopicSpec, extra ...kgo.Opt) ([]TopicState, error) {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	existing, err := describe(ctx, adm, names)
	if err != nil {
		return nil, err
	}
	var out []TopicState
	for _, s := range specs {
		if st := existing[s.Name]; !st.Missing {
			if s.Partitions > 0 && st.Partitions != int(s.Partitions) {
				st.Note = fmt.Sprintf("has %d partitions, configuration asks %d (left as is)", st.Partitions, s.Partitions)
			}
			out = append(out, st)
			continue
		}
		cfgs := make(map[string]*string, len(s.Configs))
		for kk, v := range s.Configs {
			cfgs[kk] = &v
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, s.ReplicationFactor, cfgs, s.Name)
		if err == nil {
			err = resp.Err
		}
		switch {
		case errors.Is(err, kerr.TopicAlreadyExists):
			// It exists after all: created by another process since the
			// describe, or the broker's metadata lagged behind a creation.
			st, err := describeSettled(ctx, adm, s.Name)
			if err != nil {
				return out, err
			}
			out = append(out, st)
		case err != nil:
			msg := resp.ErrMessage
			if msg != "" {
				msg = " (" + msg + ")"
			}
			return out, fmt.Errorf("creating topic %s%s: %w", s.Name, msg, err)
		default:
			// Return only once the topic is usable: on a new cluster the
			// metadata lags behind the creation, and whoever runs next
			// (doctor, a stage) would find it missing.
			st, err := describeSettled(ctx, adm, s.Name)
			if err != nil {
				return out, err
			}
			st.Created = true
			out = append(out, st)
		}
	}
	return out, nil
}

// describeSettled describes a topic known to exist, waiting briefly for
// metadata that has not caught up with its creation.
func describeSettled(ctx context.Context, adm *kadm.Client, name string) (TopicState, error) {
	for attempt := 0; ; attempt++ {
		st, err := describe(ctx, adm, []string{name})
		if err != nil {
			return TopicState{}, err
		}
		if !st[name].Missing || attempt == 100 {
			return st[name], nil
		}
		select {
		case <-ctx.Done():
			return TopicState{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DescribeTopics reports the named topics as they exist.
func DescribeTopics(ctx context.Context, k config.Kafka, names []string, extra ...kgo.Opt) (map[string]TopicState, error) {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	return describe(ctx, adm, names)
}

func describe(ctx context.Context, adm *kadm.Client, names []string) (map[string]TopicState, error) {
	td, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing topics: %w", err)
	}
	out := make(map[string]TopicState, len(names))
	for _, n := range names {
		d, ok := td[n]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			out[n] = TopicState{Name: n, Missing: true}
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("describing topic %s: %w", n, d.Err)
		}
		rf := 0
		for _, p := range d.Partitions {
			rf = max(rf, len(p.Replicas))
		}
		out[n] = TopicState{Name: n, Partitions: len(d.Partitions), ReplicationFactor: rf}
	}
	return out, nil
}

// DeleteTopics deletes topics; tests use it to clean up.
func DeleteTopics(ctx context.Context, k config.Kafka, names []string, extra ...kgo.Opt) error {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return err
	}
	defer adm.Close()
	resp, err := adm.DeleteTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("deleting topics: %w", err)
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("deleting topic %s: %w", r.Topic, r.Err))
		}
	}
	return errors.Join(errs...)
}

// BrokerInfo describes the cluster for doctor.
type BrokerInfo struct {
	ClusterID string
	Brokers   []string
}

// DescribeCluster asks the cluster for its id and brokers.
func DescribeCluster(ctx context.Context, k config.Kafka, extra ...kgo.Opt) (BrokerInfo, error) {
	adm, err := adminClient(k, extra...)
	if err != nil {
		return BrokerInfo{}, err
	}
	defer adm.Close()
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return BrokerInfo{}, fmt.Errorf("asking brokers for metadata: %w", err)
	}
	info := BrokerInfo{ClusterID: md.Cluster}
	for _, b := range md.Brokers {
		info.Brokers = append(info.Brokers, fmt.Sprintf("%d@%s:%d", b.NodeID, b.Host, b.Port))
	}
	sort.Strings(info.Brokers)
	return info, nil
}
