package ops_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ops"
)

func TestParseTable(t *testing.T) {
	tb, err := ops.ParseTable([]byte("\xef\xbb\xbfid, name ,pop,note\n1,Tokyo,37.4,\n2,\"Zürich, CH\",0.4,x\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"id", "name", "pop", "note"}, tb.Columns)
	require.Equal(t, []bool{true, false, true, false}, tb.Numeric)
	require.Equal(t, "Zürich, CH", tb.Rows[1][1])

	for _, tc := range []struct{ csv, want string }{
		{"", "empty"},
		{"a,,b\n", "no name"},
		{"a,a\n", "twice"},
		{"a,b\n1\n", "wrong number of fields"},
		{"a\n\xff\n", "UTF-8"},
		{strings.Repeat("c,", ops.MaxDatasetColumns) + "c\n", "columns"},
		{strings.Repeat("x", 65) + "\n", "longer"},
	} {
		_, err := ops.ParseTable([]byte(tc.csv))
		require.ErrorIs(t, err, ops.ErrInvalid, tc.csv)
		require.Contains(t, err.Error(), tc.want, tc.csv)
	}
	// Numbers JSON would not accept stay text.
	tb, err = ops.ParseTable([]byte("a,b,c,d\n01,1e3,0x10,-0.5\n"))
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, false, true}, tb.Numeric)
}

func TestNewDatasetAndWorkerNames(t *testing.T) {
	ds, tb, err := ops.NewDataset("cities", "u-1", []byte("a\n1\n"), time.Unix(1, 2500))
	require.NoError(t, err)
	require.Len(t, tb.Rows, 1)
	require.Equal(t, int64(4), ds.Size)
	require.Len(t, ds.SHA256, 64)
	require.Equal(t, "text/csv", ds.ContentType)
	_, _, err = ops.NewDataset("Bad Name", "", []byte("a\n"), time.Now())
	require.ErrorIs(t, err, ops.ErrInvalid)

	name, ok := ops.DatasetOf("csv:cities")
	require.True(t, ok)
	require.Equal(t, "cities", name)
	for _, w := range []string{"cities", "csv:", "csv:Bad", "CSV:cities", "csv:a/b"} {
		_, ok := ops.DatasetOf(w)
		require.False(t, ok, w)
	}
}
