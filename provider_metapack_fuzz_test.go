package mapsindoors

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// parsePropertiesErrors are the only messages parseProperties may give:
// none quotes the text, which holds the API key's secret.
var parsePropertiesErrors = regexp.MustCompile(`^(line [0-9]+ is not a valid properties line \(check its backslash escapes\)|it is not a valid properties file)$`)

// FuzzParseProperties: whatever an operator pastes as api_key_properties,
// parseProperties never panics and its error never quotes the text; and a
// plain "key = value" line reads back as that key and value.
func FuzzParseProperties(f *testing.F) {
	seeds := []struct{ text, key, value string }{
		{"apiKey.id = 1DR3434KDFJLR32L53L4235J6\napiKey.secret = wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY\n", "apiKey.secret", "wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY"},
		{"apiKey.id=x\r\napiKey.secret=y", "apiKey.id", "x"},
		{"# comment\n! also a comment\napiKey.id : x\n", "k", "v=with:separators"},
		{"apiKey.secret = ${not.expanded}\n", "apiKey.secret", "${not.expanded}"},
		{"apiKey.id = \\u12\n", "a", "\u00fcn\u00efc\u00f8d\u00e9"},
		{"apiKey.id = \\\n  continued\n", "a", "b"},
		{"key\\ with\\ spaces = v\\\\\n", "a-b_c.d", "v"},
		{"\\", "", ""},
		{"apiKey.id = \\uZZZZ", "k", "trailing space "},
		{"\xff\xfe = bad utf-8\n", "k", "\"quoted\""},
	}
	for _, s := range seeds {
		f.Add(s.text, s.key, s.value)
	}
	f.Fuzz(func(t *testing.T, text, key, value string) {
		if _, err := parseProperties(text); err != nil && !parsePropertiesErrors.MatchString(err.Error()) {
			t.Fatalf("an error that is not one of parseProperties' own: the text may be quoted in it")
		}
		if !simplePropertyKey(key) || !simplePropertyValue(value) {
			return
		}
		props, err := parseProperties(key + " = " + value + "\n")
		if err != nil {
			t.Fatalf("a plain key = value line does not parse: %v", err)
		}
		if got, ok := props[key]; !ok || got != value {
			t.Fatalf("key %q reads back as %q, want %q", key, got, value)
		}
	})
}

// simplePropertyKey is a key as apiKey.properties has them.
func simplePropertyKey(k string) bool {
	return k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// simplePropertyValue is a value that needs no escaping: printable, no
// backslash, not starting with blank space (which the format skips).
func simplePropertyValue(v string) bool {
	if strings.ContainsRune(v, '\\') || strings.TrimLeft(v, " \t\f") != v {
		return false
	}
	for _, r := range v {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}
