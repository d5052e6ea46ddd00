package config

// Notify configures the notifications -> people stage: email, SMS, webhook
// and in-app channels.
type Notify struct {
	// MaxAttempts bounds the deliveries of one notification on one
	// channel. Default 8.
	MaxAttempts int `yaml:"max_attempts"`
}

func defaultNotify() Notify { return Notify{MaxAttempts: 8} }

func (n Notify) validate(p *problems) {
	if n.MaxAttempts < 1 {
		p.addf("notify.max_attempts", "must be at least 1; got %d", n.MaxAttempts)
	}
}
