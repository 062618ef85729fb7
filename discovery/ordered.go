package discovery

import (
	"bytes"
	"encoding/json"
)

// object is a JSON object that keeps its keys in insertion order, so the
// schemas this package writes read like the ones in the Bazaar
// specification ("$schema" first, "required" last) and marshal to the same
// bytes every time.
type object []member

type member struct {
	key   string
	value any
}

// set appends a key; callers never set one twice.
func (o object) set(key string, value any) object { return append(o, member{key, value}) }

// MarshalJSON implements json.Marshaler.
func (o object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	if err := o.appendJSON(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// appendJSON writes the object into buf in one pass: nested objects and raw
// JSON are written as they are instead of being re-encoded (and
// re-compacted) by encoding/json at every level.
func (o object) appendJSON(buf *bytes.Buffer) error {
	buf.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := appendString(buf, m.key); err != nil {
			return err
		}
		buf.WriteByte(':')
		switch v := m.value.(type) {
		case string:
			if err := appendString(buf, v); err != nil {
				return err
			}
		case object:
			if v == nil {
				buf.WriteString("{}")
				continue
			}
			if err := v.appendJSON(buf); err != nil {
				return err
			}
		case json.RawMessage:
			if err := json.Compact(buf, v); err != nil {
				return err
			}
		default:
			b, err := marshal(v)
			if err != nil {
				return err
			}
			buf.Write(b)
		}
	}
	buf.WriteByte('}')
	return nil
}

// appendString writes a JSON string: plain printable ASCII directly, the
// rest through encoding/json.
func appendString(buf *bytes.Buffer, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b, err := marshal(s)
			if err != nil {
				return err
			}
			buf.Write(b)
			return nil
		}
	}
	buf.WriteByte('"')
	buf.WriteString(s)
	buf.WriteByte('"')
	return nil
}

// marshal encodes v without HTML escaping (a resource URL keeps its '&')
// and without a trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
