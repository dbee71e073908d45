package upstream

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	// maxCodeLen bounds an OAuth2 error code. The codes RFC 6749 and its
	// extensions define are under 30 characters; anything much longer is
	// not a code but something the server put in its place.
	maxCodeLen = 64
	// maxTextLen bounds any other text the upstream chose (an
	// error_description, a network error's message) in an Error.
	maxTextLen = 300
	// maxScan is how much of such a text is read at all: far more than is
	// kept, so what is kept is whole, and little enough that a megabyte
	// of error costs no time.
	maxScan = 16 << 10
	// redacted stands where a credential was. Its characters are all
	// allowed in an OAuth2 error code, so a code keeps its shape.
	redacted = "[redacted]"
	// withheld replaces a whole text that still holds a credential once
	// the known encodings are out: some encoding nobody listed.
	withheld = "[withheld: it held a credential]"
)

// redactor takes the credentials of one exchange out of what the upstream
// chose to say. A server that echoes what it was sent may do so in any
// encoding (form-encoded, base64 in a Basic header, JSON-escaped), so
// matching the raw value alone lets an echo of a secret with + or $
// through. The redactor replaces every encoding it knows, and withholds a
// text in which a decoding it can undo still finds a credential.
type redactor struct {
	// secrets are the raw credentials, for the check after replacing.
	secrets []string
	// variants are every known encoding of every secret, longest first,
	// so no shorter one leaves a remnant of a longer one behind.
	variants []string
	// plain are replaced only as they are: the username is no secret,
	// but was never shown in an upstream's text either.
	plain []string
}

// redactor is for an exchange in which the client sent, or holds, these
// credentials besides the configured ones: a refresh token, or the access
// token of a clientcredentials call.
func (c *HTTPClient) redactor(held ...string) *redactor {
	r := &redactor{}
	r.add(c.cfg.ClientSecret, c.cfg.ClientID)
	r.add(c.cfg.Password, c.cfg.Username)
	for _, s := range held {
		r.add(s, "")
	}
	if c.cfg.Username != "" {
		r.plain = append(r.plain, c.cfg.Username)
	}
	slices.SortFunc(r.variants, func(a, b string) int { return len(b) - len(a) })
	r.variants = slices.Compact(r.variants)
	return r
}

// add registers a secret and its encodings; user, when set, is the name it
// goes with in an HTTP Basic header.
func (r *redactor) add(secret, user string) {
	if secret == "" {
		return
	}
	r.secrets = append(r.secrets, secret)
	q := url.QueryEscape(secret) // also the form encoding
	q20 := strings.ReplaceAll(q, "+", "%20")
	p := url.PathEscape(secret)
	r.variants = append(r.variants, secret, q, q20, p, lowerHex(q), lowerHex(q20), lowerHex(p), html.EscapeString(secret))
	if shown := printable(secret); shown != secret {
		// As text shows a secret with runes it makes spaces.
		r.variants = append(r.variants, shown)
	}
	r.variants = append(r.variants, base64s(secret)...)
	if user != "" {
		r.variants = append(r.variants, base64s(user+":"+secret)...)
		r.variants = append(r.variants, base64s(url.QueryEscape(user)+":"+q)...)
	}
	for _, escapeHTML := range []bool{false, true} {
		for _, ascii := range []bool{false, true} {
			for _, slash := range []bool{false, true} {
				j := jsonEscape(secret, escapeHTML, ascii, slash)
				r.variants = append(r.variants, j, upperUnicodeEscapes(j))
			}
		}
	}
}

// text is s with every credential out, control and invalid characters
// made spaces, and at most maxTextLen bytes long. The credentials are
// looked for in the text as it came, before anything is made a space: a
// secret with a rune that is not printable (NBSP, a zero-width space, a
// soft hyphen) matches only there. What the mapping then leaves is looked
// at again, so a secret that merely differs in such runes goes too.
func (r *redactor) text(s string) string {
	cut := len(s) > maxScan
	if cut {
		s = s[:maxScan]
	}
	s = r.replace(s)
	if r.leaks(s) {
		return withheld
	}
	s = r.replace(printable(strings.ToValidUTF8(s, string(utf8.RuneError))))
	if r.leaks(s) {
		return withheld
	}
	if cut {
		// The cut may have gone through an encoded credential, whose
		// remnant no replacement matches: drop what could be one.
		s = truncate(s, max(0, len(s)-4*r.longest()))
		if !strings.HasSuffix(s, "…") {
			s += "…"
		}
	}
	return truncate(s, maxTextLen)
}

// printable is s with every rune that is not printable made a space.
func printable(s string) string {
	return strings.Map(func(c rune) rune {
		if !unicode.IsPrint(c) {
			return ' '
		}
		return c
	}, s)
}

// longest is the length of the longest encoding of a credential.
func (r *redactor) longest() int {
	if len(r.variants) == 0 {
		return 0
	}
	return len(r.variants[0])
}

// code is an OAuth2 error code with every credential out, or "" when what
// is left is not a code RFC 6749 §5.2 allows: 1*( %x20-21 / %x23-5B /
// %x5D-7E ), here also at most maxCodeLen long. Such a code is dropped
// rather than cut, as no part of it can be trusted to mean anything.
func (r *redactor) code(s string) (code string, ok bool) {
	if len(s) > maxScan {
		return "", false
	}
	s = r.replace(s)
	if s == "" {
		return "", true
	}
	if len(s) > maxCodeLen || r.leaks(s) {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x22 || c == 0x5c || c > 0x7e {
			return "", false
		}
	}
	return s, true
}

// err is err with its text redacted and bounded, as text does it; errors.Is
// and errors.As still see the original. A network error's text can hold
// what the server sent (net/http quotes a malformed status line).
func (r *redactor) err(err error) error {
	if _, own := err.(ownError); err == nil || own { //nolint:errorlint // only an ownError itself is all this package's text; wrapped, it is not
		return err
	}
	return &redactedError{err: err, text: r.text(err.Error())}
}

type redactedError struct {
	err  error
	text string
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }

func (r *redactor) replace(s string) string {
	for _, v := range r.variants {
		s = strings.ReplaceAll(s, v, redacted)
	}
	for _, v := range r.plain {
		s = replaceWord(s, v)
	}
	return s
}

// replaceWord replaces w in s where it stands as a word of its own, not
// where it is part of a longer one: the username "admin" goes from "locked
// admin", but "administrator" stays.
func replaceWord(s, w string) string {
	if w == "" {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, w)
		if i < 0 {
			break
		}
		end := i + len(w)
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[end:])
		b.WriteString(s[:i])
		if (i > 0 && isWordRune(before)) || (end < len(s) && isWordRune(after)) {
			b.WriteString(w)
		} else {
			b.WriteString(redacted)
		}
		s = s[end:]
	}
	b.WriteString(s)
	return b.String()
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }

// leaks reports whether s, undone as percent-encoding, JSON escapes, HTML
// entities or base64 (also twice over, or one inside the other), still
// holds a secret.
func (r *redactor) leaks(s string) bool {
	if len(r.secrets) == 0 {
		return false
	}
	pct := percentDecode(s, false)
	form := percentDecode(s, true)
	candidates := []string{
		s, pct, form, percentDecode(form, true),
		jsonUnescape(s), jsonUnescape(form), percentDecode(jsonUnescape(s), true),
		html.UnescapeString(s), html.UnescapeString(form),
	}
	for _, c := range candidates {
		if r.holdsSecret(c) || base64Runs(c, func(decoded string) bool {
			return r.holdsSecret(decoded) || r.holdsSecret(percentDecode(decoded, true))
		}) {
			return true
		}
	}
	return false
}

func (r *redactor) holdsSecret(s string) bool {
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			return true
		}
	}
	return false
}

func base64s(s string) []string {
	b := []byte(s)
	return []string{
		base64.StdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
	}
}

// toStdBase64 makes the URL alphabet the standard one and drops padding.
var toStdBase64 = strings.NewReplacer("=", "", "-", "+", "_", "/")

// base64Runs decodes each run of base64 characters in s (either alphabet),
// from each of the four offsets a run can start at relative to the
// encoded text it came from, until found is true for one.
func base64Runs(s string, found func(decoded string) bool) bool {
	isB64 := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '+' || c == '/' || c == '-' || c == '_' || c == '='
	}
	for i := 0; i < len(s); {
		if !isB64(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isB64(s[j]) {
			j++
		}
		run := s[i:j]
		i = j
		if len(run) < 4 {
			continue // two bytes at most, no credential
		}
		// Padding is dropped, so the run may now be shorter than four
		// (a run of "00==" is "00"): no offset goes past its end.
		run = toStdBase64.Replace(run)
		// A part of one character trims to "", which holds nothing.
		for off := 0; off < 4 && off < len(run); off++ {
			part := run[off:]
			if len(part)%4 == 1 {
				part = part[:len(part)-1]
			}
			if b, err := base64.RawStdEncoding.DecodeString(part); err == nil && found(string(b)) {
				return true
			}
		}
	}
	return false
}

// percentDecode undoes %XX escapes (either case of hex), leaving any
// malformed one as it is, and with plus also + as a space.
func percentDecode(s string, plus bool) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case s[i] == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// jsonUnescape undoes JSON string escapes, leaving malformed ones as they
// are.
func jsonUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	simple := map[byte]string{'"': `"`, '\\': `\`, '/': "/", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t"}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if rep, ok := simple[s[i+1]]; ok {
			b.WriteString(rep)
			i++
			continue
		}
		r1, ok := hex4(s, i+2)
		if s[i+1] != 'u' || !ok {
			b.WriteByte(s[i])
			continue
		}
		i += 5
		if utf16.IsSurrogate(r1) && strings.HasPrefix(s[i+1:], `\u`) {
			if r2, ok := hex4(s, i+3); ok {
				if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
					b.WriteRune(r)
					i += 6
					continue
				}
			}
		}
		b.WriteRune(r1)
	}
	return b.String()
}

func hex4(s string, at int) (rune, bool) {
	if at+4 > len(s) {
		return 0, false
	}
	var r rune
	for k := at; k < at+4; k++ {
		if !isHex(s[k]) {
			return 0, false
		}
		r = r<<4 | rune(unhex(s[k]))
	}
	return r, true
}

// jsonEscape is s as a JSON encoder might write it inside quotes: with or
// without HTML-safe escapes (Go's default), non-ASCII as \u escapes
// (Python's and PHP's default) and / as \/ (PHP's default).
func jsonEscape(s string, escapeHTML, ascii, slash bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s)
	out := strings.TrimSuffix(b.String(), "\n")
	out = out[1 : len(out)-1]
	if slash {
		out = strings.ReplaceAll(out, "/", `\/`)
	}
	if ascii {
		var a strings.Builder
		for _, r := range out {
			if r < utf8.RuneSelf {
				a.WriteRune(r)
				continue
			}
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&a, `\u%04x`, u)
			}
		}
		out = a.String()
	}
	return out
}

// upperUnicodeEscapes writes the hex of \u escapes in upper case, as some
// encoders do.
func upperUnicodeEscapes(s string) string {
	return unicodeEscape.ReplaceAllStringFunc(s, func(e string) string { return `\u` + strings.ToUpper(e[2:]) })
}

// lowerHex writes the hex of percent escapes in lower case, which RFC 3986
// allows and some servers send.
func lowerHex(s string) string { return percentEscape.ReplaceAllStringFunc(s, strings.ToLower) }

var (
	unicodeEscape = regexp.MustCompile(`\\u[0-9A-Fa-f]{4}`)
	percentEscape = regexp.MustCompile(`%[0-9A-Fa-f]{2}`)
)

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
