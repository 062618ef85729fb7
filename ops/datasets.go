package ops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/402claw/dispatcher/tenant"
)

// DatasetWorkerPrefix starts the worker name of a tenant served by the
// built-in CSV worker: workerName "csv:cities" serves the data set "cities".
const DatasetWorkerPrefix = "csv:"

// DatasetOf returns the data set a worker name serves, and whether it names
// one at all.
func DatasetOf(workerName string) (string, bool) {
	name, ok := strings.CutPrefix(workerName, DatasetWorkerPrefix)
	if !ok || !tenant.ValidSlug(name) {
		return "", false
	}
	return name, true
}

// Limits of an uploaded data set.
const (
	// DefaultMaxDatasetSize bounds an upload unless AdminConfig says
	// otherwise.
	DefaultMaxDatasetSize = 8 << 20
	// MaxDatasetColumns bounds the header.
	MaxDatasetColumns = 100
	// MaxDatasetRows bounds the rows.
	MaxDatasetRows = 200_000
	// maxColumnName bounds one column name.
	maxColumnName = 64
)

// Dataset is an uploaded CSV file that the built-in CSV worker serves.
type Dataset struct {
	// Name is the data set's name, a tenant slug (usually the slug of the
	// tenant that serves it).
	Name string `json:"name"`
	// OwnerUserID is the user who uploaded it ("" for the admin).
	OwnerUserID string `json:"ownerUserId,omitempty"`
	// ContentType is the uploaded media type ("text/csv").
	ContentType string `json:"contentType"`
	// SHA256 is the lowercase hex digest of Data.
	SHA256 string `json:"sha256"`
	// Size is len(Data).
	Size int64 `json:"size"`
	// Data is the file as uploaded; nil in the answer of StatDataset.
	Data []byte `json:"-"`
	// UpdatedAt is when it was last stored, UTC.
	UpdatedAt time.Time `json:"updatedAt"`
}

// Datasets is the storage port of uploaded data sets. Implementations are
// safe for concurrent use and keep Data byte for byte.
type Datasets interface {
	// PutDataset stores d, replacing a data set of the same name.
	PutDataset(ctx context.Context, d Dataset) error
	// GetDataset returns the data set with its data, or ErrNotFound.
	GetDataset(ctx context.Context, name string) (Dataset, error)
	// StatDataset returns the data set without its data (Data nil), or
	// ErrNotFound: a cheap check of SHA256 before using a cached copy.
	StatDataset(ctx context.Context, name string) (Dataset, error)
	// DeleteDataset removes the data set, or returns ErrNotFound.
	DeleteDataset(ctx context.Context, name string) error
}

// NewDataset validates data as a CSV table (see ParseTable) and returns the
// data set to store, with its digest and size filled in.
func NewDataset(name, owner string, data []byte, now time.Time) (Dataset, *Table, error) {
	if !tenant.ValidSlug(name) {
		return Dataset{}, nil, fmt.Errorf("%w: data set name %q does not match ^[a-z0-9][a-z0-9-]{0,62}$", ErrInvalid, clip(name))
	}
	t, err := ParseTable(data)
	if err != nil {
		return Dataset{}, nil, err
	}
	sum := sha256.Sum256(data)
	return Dataset{
		Name: name, OwnerUserID: owner, ContentType: "text/csv",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data,
		UpdatedAt: now.UTC().Truncate(time.Microsecond),
	}, t, nil
}

// Table is a parsed CSV data set: a header of unique column names and rows
// of exactly that many fields.
type Table struct {
	Columns []string
	Rows    [][]string
	// Numeric tells, per column, whether every non-empty field of it is a
	// number (such columns get min_/max_ filters and JSON numbers).
	Numeric []bool
}

// ParseTable parses a CSV file (comma separated, optional UTF-8 BOM, a
// header row first) and validates it: UTF-8 text, 1 to MaxDatasetColumns
// unique, non-empty column names of at most 64 bytes, every row as long as
// the header, at most MaxDatasetRows rows. Errors wrap ErrInvalid and name
// the line.
func ParseTable(data []byte) (*Table, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: the CSV file is not UTF-8 text", ErrInvalid)
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.ReuseRecord = false
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the CSV file is empty (a header row is required)", ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: CSV: %v", ErrInvalid, err)
	}
	if len(header) > MaxDatasetColumns {
		return nil, fmt.Errorf("%w: CSV header has %d columns, at most %d allowed", ErrInvalid, len(header), MaxDatasetColumns)
	}
	seen := make(map[string]bool, len(header))
	for i, c := range header {
		c = strings.TrimSpace(c)
		header[i] = c
		switch {
		case c == "":
			return nil, fmt.Errorf("%w: CSV header: column %d has no name", ErrInvalid, i+1)
		case len(c) > maxColumnName:
			return nil, fmt.Errorf("%w: CSV header: column %d name is longer than %d bytes", ErrInvalid, i+1, maxColumnName)
		case strings.ContainsFunc(c, isControl):
			return nil, fmt.Errorf("%w: CSV header: column %d name has control characters", ErrInvalid, i+1)
		case seen[c]:
			return nil, fmt.Errorf("%w: CSV header: column %q appears twice", ErrInvalid, clip(c))
		}
		seen[c] = true
	}
	t := &Table{Columns: header, Numeric: make([]bool, len(header))}
	for i := range t.Numeric {
		t.Numeric[i] = true
	}
	hasValue := make([]bool, len(header))
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: CSV: %v", ErrInvalid, err)
		}
		if len(t.Rows) == MaxDatasetRows {
			return nil, fmt.Errorf("%w: the CSV file has more than %d rows", ErrInvalid, MaxDatasetRows)
		}
		for i, f := range rec {
			if f == "" {
				continue
			}
			hasValue[i] = true
			if t.Numeric[i] && !isNumber(f) {
				t.Numeric[i] = false
			}
		}
		t.Rows = append(t.Rows, rec)
	}
	for i := range t.Numeric {
		t.Numeric[i] = t.Numeric[i] && hasValue[i]
	}
	return t, nil
}

// isNumber reports whether s is a plain decimal number: an optional sign,
// digits, an optional fraction (no exponents, no hex, no spaces), at most
// 30 bytes, so that it is also a valid JSON number.
func isNumber(s string) bool {
	if len(s) == 0 || len(s) > 30 {
		return false
	}
	i := 0
	if s[0] == '-' {
		i++
	}
	digits, dot := 0, false
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && digits > 0:
			dot = true
		default:
			return false
		}
	}
	if digits == 0 || s[len(s)-1] == '.' {
		return false
	}
	// JSON forbids leading zeros ("01"); such fields stay text.
	j := 0
	if s[0] == '-' {
		j = 1
	}
	if len(s) > j+1 && s[j] == '0' && s[j+1] != '.' {
		return false
	}
	return true
}
