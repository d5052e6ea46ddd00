// Package providers turns vendor payloads into canonical readings.
//
// A provider is one vendor's payload format. The bridge puts each MQTT
// message on telemetry.raw unchanged, with the provider name in the
// "provider" header; the normalize stage looks the name up in a [Registry]
// and calls the [Decoder], which returns one [Reading] per measured
// variable, in the variable's canonical unit, with the value and unit as
// sent kept beside it (RawValue, RawUnit).
//
// # Variables and units
//
// The catalog ([Variables], [CanonicalUnit], [Units], [Convert]):
//
//	flow          L/s    L/s l/s lps mL/s L/min l/min lpm L/h l/h m3/s m3/min m3/h m3/d
//	                     (and m³/…) ML/d gal/min gpm gal/h
//	totalizer     m3     m3 m³ L l mL kL ML gal kgal ft3 acre-ft
//	level         m      m cm mm ft in   (water table depth)
//	pressure      kPa    kPa Pa bar mbar psi mca mH2O
//	temperature   Cel    Cel °C C degC K °F F degF
//	conductivity  uS/cm  uS/cm µS/cm mS/cm
//	battery       V      V mV
//	ph            pH     "" pH
//
// Spellings are matched exactly: "ML" is a megalitre, "mL" a millilitre.
// Gallons are US gallons (3.785411784 L). Factors are applied as exact
// integer ratios, so a conversion by an exact decimal factor (cm to m, L to
// m3, gpm to L/s) of an integer value rounds once.
//
// # Specs
//
// Adding a vendor is configuration: a YAML spec ([ParseSpec],
// [LoadSpecDir]) says where a JSON payload carries the device id, the event
// time and each variable. Paths are gjson paths
// (https://github.com/tidwall/gjson/blob/master/SYNTAX.md): "a.b", "a.0.b".
//
//	name: acme-registers      # required; [a-z0-9][a-z0-9._-]*, matched against the "provider" header
//	format: json              # optional; json is the only spec format
//	device: device.serial     # optional; default: Payload.Device (the topic's device)
//	time:                     # optional; omitted: Payload.ReceivedAt
//	  path: time              # required in the block
//	  format: unix_ms         # rfc3339 (default) | unix_s | unix_ms | unix_us | layout:<Go time layout>
//	  timezone: America/Santiago  # only with layout:, for layouts without an offset; default UTC
//
// then either a list of fixed fields:
//
//	variables:
//	  - variable: flow        # required; a catalog variable, each at most once
//	    path: flow_lps        # required
//	    unit: L/s             # a fixed unit, or
//	    # unit_path: flow_unit  # the unit read from the payload (a string)
//	    scale: 1              # multiplied before conversion; default 1, never 0
//	    optional: false       # default false: missing or null is a bad payload
//
// or registers, an array whose elements carry their own id and unit:
//
//	registers:
//	  path: registers         # required; the array
//	  id: id                  # default "id"; a string or number
//	  value: value            # default "value"
//	  unit: unit              # default "unit"; or fixed_unit: <unit> for every register
//	  map: {Q: flow, VOL: totalizer, NIV: level}  # id -> variable; other ids are ignored
//	  required: [flow]        # mapped variables that must be present
//
// A spec has exactly one of variables and registers. Unknown keys, unknown
// variables and units, a bad time format or time zone are reported at parse
// time, all at once, each with its key path
// ("variables[1].unit: unknown unit \"furlongs\" for flow; known: ...").
//
// When decoding, numbers may be JSON numbers or JSON strings holding a
// decimal number ("15.31"); a missing or null value of an optional
// variable or of a register is skipped; a register id given twice, a value
// that is not a number, NaN or infinite, a time that cannot be parsed or
// lies outside 1970-01-01..2262-04-11, and a unit read from the payload
// that is unknown are bad payloads naming the field; so is a payload that
// yields no reading at all.
//
// # Shipped providers
//
// [RegisterBuiltin] registers generic-json and acme-registers (the specs
// in specs/, embedded) and lorawan-ttn ([LoRaWAN], a code decoder for a
// binary frame). The formats are those the simulate package encodes.
//
// # Tests
//
// testdata/<provider>/<case>/ holds payload.json or payload.bin, an
// optional meta.json ({"device", "topic", "received_at"}) and want.json or
// want.err; `go test ./providers -run Golden -update` rewrites want.json.
// The fuzz targets seed from the same payloads.
package providers
