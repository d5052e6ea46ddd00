package compliance

import (
	"math"
	"strconv"
	"time"
)

// Date and time layouts.
const (
	layoutDate      = "2006-01-02"          // DGA fechaMedicion
	layoutTime      = "15:04:05"            // DGA horaMedicion
	layoutLocal     = "2006-01-02T15:04:05" // SMA estampaTiempo, no offset
	layoutStampOff  = "2006-01-02T15:04:05-0700"
	maxTotalizerLen = 15
)

// FormatDecimal writes v with exactly decimals digits after a '.', no
// thousands separator ("15.31"). Negative, NaN and infinite values are
// ErrInvalid, the reason naming field.
func FormatDecimal(field string, v float64, decimals int) (string, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "", invalidf("%s: %v is not a number", field, v)
	}
	if v < 0 {
		return "", invalidf("%s: negative value %v", field, v)
	}
	if v == 0 {
		v = 0 // no "-0.00"
	}
	return strconv.FormatFloat(v, 'f', decimals, 64), nil
}

// FormatTotalizer writes a totalizer as an integer string of at most 15
// characters, truncated (mode truncate) or rounded (round). Negative, NaN,
// infinite and too large values are ErrInvalid.
func FormatTotalizer(field string, v float64, mode string) (string, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "", invalidf("%s: %v is not a number", field, v)
	}
	if v < 0 {
		return "", invalidf("%s: negative value %v", field, v)
	}
	if mode == TotalizerRound {
		v = math.Round(v)
	} else {
		v = math.Trunc(v)
	}
	s := strconv.FormatFloat(v, 'f', 0, 64)
	if len(s) > maxTotalizerLen {
		return "", invalidf("%s: %s has more than %d digits", field, s, maxTotalizerLen)
	}
	return s, nil
}

// FormatMeasurementDate returns DGA's fechaMedicion (YYYY-MM-DD) and
// horaMedicion (HH:mm:ss) of the slot instant at in loc.
func FormatMeasurementDate(at time.Time, loc *time.Location) (date, clock string) {
	l := at.In(loc)
	return l.Format(layoutDate), l.Format(layoutTime)
}

// FormatLocal returns at in loc as yyyy-MM-ddTHH:mm:ss with no offset (SMA
// estampaTiempo).
func FormatLocal(at time.Time, loc *time.Location) string { return at.In(loc).Format(layoutLocal) }

// FormatTimeStampOrigen returns DGA's timeStampOrigen header for a request
// made at now about the slot at, in style (see DGASettings).
func FormatTimeStampOrigen(style string, now, at time.Time, loc *time.Location) string {
	switch style {
	case StampMeasurementLocal:
		return at.In(loc).Format(layoutLocal)
	case StampOffset:
		return now.In(loc).Format(layoutStampOff)
	default:
		return now.In(loc).Format(layoutLocal) + "-0000"
	}
}
