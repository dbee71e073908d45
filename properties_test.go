package mapsindoors

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseProperties(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]string
		err  string
	}{
		{"Metapack's file", "apiKey.id = 1DR3434KDFJLR32L53L4235J6\napiKey.secret = wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY\n",
			map[string]string{"apiKey.id": "1DR3434KDFJLR32L53L4235J6", "apiKey.secret": "wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY"}, ""},
		{"comments, colons, CRLF-free blanks", "# a comment\n! another\n\napiKey.id: abc\n  apiKey.secret=s=t\n",
			map[string]string{"apiKey.id": "abc", "apiKey.secret": "s=t"}, ""},
		{"white space separator", "apiKey.id abc\n", map[string]string{"apiKey.id": "abc"}, ""},
		{"escapes and continuation", "key\\ one = a\\:b\\\\\\\n    c\\u0041\n", map[string]string{"key one": `a:b\cA`}, ""},
		{"trailing escaped backslash", "k = v\\\\\n", map[string]string{"k": `v\`}, ""},
		{"broken unicode escape", "k = \\u12\n", nil, "line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProperties(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
