package bridge

import (
	"fmt"
	"strings"
)

// pattern extracts the device id and the provider from an MQTT topic. Its
// levels are literals, "+" (any one level), "{device}", "{provider}" (capture
// one level) and a final "#" (any rest, possibly empty).
type pattern struct {
	levels []string
}

func compilePattern(p string) (pattern, error) {
	levels := strings.Split(p, "/")
	var device bool
	for i, l := range levels {
		switch {
		case l == "{device}":
			device = true
		case l == "#" && i != len(levels)-1:
			return pattern{}, fmt.Errorf("topic pattern %q: '#' must be the last level", p)
		}
	}
	if !device {
		return pattern{}, fmt.Errorf("topic pattern %q must capture {device}", p)
	}
	return pattern{levels: levels}, nil
}

// match returns the device and provider of topic, or ok=false when the topic
// does not fit the pattern or the device level is empty.
func (p pattern) match(topic string) (device, provider string, ok bool) {
	parts := strings.Split(topic, "/")
	for i, l := range p.levels {
		if l == "#" {
			break
		}
		if i >= len(parts) {
			return "", "", false
		}
		switch l {
		case "+":
		case "{device}":
			device = parts[i]
		case "{provider}":
			provider = parts[i]
		default:
			if parts[i] != l {
				return "", "", false
			}
		}
	}
	if last := p.levels[len(p.levels)-1]; last != "#" && len(parts) != len(p.levels) {
		return "", "", false
	}
	return device, provider, device != ""
}
