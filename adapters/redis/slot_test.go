package redis

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSlot(t *testing.T) {
	t.Parallel()
	// The check value of CRC-16/XMODEM, and slots Redis Cluster documents
	// or reports (CLUSTER KEYSLOT).
	require.Equal(t, uint16(0x31C3), crc16("123456789"))
	require.Equal(t, uint16(12182), slot("foo"))
	require.Equal(t, uint16(5061), slot("bar"))
	require.Equal(t, slot("{user1000}.following"), slot("{user1000}.followers"))
	require.Equal(t, slot("user1000"), slot("x{user1000}y"))

	tests := []struct{ key, tag string }{
		{"q:{acme}:day", "acme"},
		{"p:q:{acme}:day", "acme"},
		{"{}", "{}"},         // empty tag: whole key
		{"a{}{b}", "a{}{b}"}, // the first "{" decides; its tag is empty
		{"a{b}{c}", "b"},     // only the first tag counts
		{"{a{b}c}", "a{b"},   // up to the first "}" after the first "{"
		{"no tag at all", "no tag at all"},
		{"open{only", "open{only"},
	}
	for _, tc := range tests {
		require.Equal(t, tc.tag, hashTag(tc.key), tc.key)
	}
}
