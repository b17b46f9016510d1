package cdc

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Type OIDs of the built-in types the row encoder treats specially.
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

// AppendRowJSON appends row as a JSON object keyed by column name. Numbers and
// booleans become JSON numbers and booleans, json/jsonb is embedded, timestamps
// become RFC 3339 strings, everything else (uuid, text, enums, ...) a string.
// Unchanged TOAST values are left out; see UnchangedColumns.
func AppendRowJSON(b []byte, rel *Relation, row Row) []byte {
	b, _ = AppendRowJSONLimit(b, rel, row, 0, nil)
	return b
}

// AppendRowJSONLimit is AppendRowJSON leaving out values longer than limit
// bytes (0: no limit); it appends their column names to omitted.
func AppendRowJSONLimit(b []byte, rel *Relation, row Row, limit int, omitted []string) ([]byte, []string) {
	if row == nil {
		return append(b, "null"...), omitted
	}
	b = append(b, '{')
	first := true
	for i, v := range row {
		if i >= len(rel.Columns) || v.Kind == Unchanged {
			continue
		}
		if limit > 0 && len(v.Data) > limit {
			omitted = append(omitted, rel.Columns[i].Name)
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = AppendString(b, rel.Columns[i].Name)
		b = append(b, ':')
		b = appendValue(b, rel.Columns[i].OID, v)
	}
	return append(b, '}'), omitted
}

// UnchangedColumns names the columns of row that are unchanged TOAST values.
func UnchangedColumns(rel *Relation, row Row) []string {
	var out []string
	for i, v := range row {
		if v.Kind == Unchanged && i < len(rel.Columns) {
			out = append(out, rel.Columns[i].Name)
		}
	}
	return out
}

func appendValue(b []byte, oid uint32, v Value) []byte {
	if v.Kind == Null {
		return append(b, "null"...)
	}
	s := v.Data
	switch oid {
	case oidBool:
		if len(s) == 1 && s[0] == 't' {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case oidInt2, oidInt4, oidInt8, oidOID:
		if isJSONNumber(s) {
			return append(b, s...)
		}
	case oidFloat4, oidFloat8, oidNumeric:
		if isJSONNumber(s) {
			return append(b, s...)
		}
		return appendStringBytes(b, s) // NaN, Infinity
	case oidJSON, oidJSONB:
		return append(b, s...)
	case oidTimestamptz:
		if t, err := time.Parse("2006-01-02 15:04:05.999999999Z07", string(s)); err == nil {
			b = append(b, '"')
			b = t.UTC().AppendFormat(b, time.RFC3339Nano)
			return append(b, '"')
		}
		if t, err := time.Parse("2006-01-02 15:04:05.999999999Z07:00", string(s)); err == nil {
			b = append(b, '"')
			b = t.UTC().AppendFormat(b, time.RFC3339Nano)
			return append(b, '"')
		}
	case oidTimestamp:
		if t, err := time.Parse("2006-01-02 15:04:05.999999999", string(s)); err == nil {
			b = append(b, '"')
			b = t.AppendFormat(b, "2006-01-02T15:04:05.999999999")
			return append(b, '"')
		}
	}
	return appendStringBytes(b, s)
}

// isJSONNumber reports whether s is a JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s []byte) bool {
	i, n := 0, len(s)
	digits := func() int {
		j := i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < n && s[i] == '-' {
		i++
	}
	if i < n && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < n && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < n && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == n
}

// AppendString appends s as a JSON string.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = appendEscape(b, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, "89"[r-'\u2028'])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func appendStringBytes(b []byte, s []byte) []byte {
	// Avoid a copy for the common all-ASCII case.
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return AppendString(b, string(s))
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendEscape(b []byte, c byte) []byte {
	switch c {
	case '"':
		return append(b, `\"`...)
	case '\\':
		return append(b, `\\`...)
	case '\n':
		return append(b, `\n`...)
	case '\r':
		return append(b, `\r`...)
	case '\t':
		return append(b, `\t`...)
	}
	const hex = "0123456789abcdef"
	return append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
}

// AppendLSN appends the LSN in Postgres' X/X form.
func AppendLSN(b []byte, l LSN) []byte {
	b = strconv.AppendUint(b, uint64(l)>>32, 16)
	b = append(b, '/')
	return strconv.AppendUint(b, uint64(l)&0xffffffff, 16)
}
