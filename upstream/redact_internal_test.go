package upstream

import "testing"

// A run of base64 characters that is mostly padding ("00==", found by
// FuzzClientSecretsResponses) is shorter than four once the padding is
// dropped: decoding it from each offset must not slice past its end, or
// the redactor panics on an upstream's error text.
func TestBase64Runs_PaddingHeavyRunsNeverSlicePastTheEnd(t *testing.T) {
	for _, s := range []string{"00==", "0===", "====", "a0==b", "{\"error\":\"00==\"}", "0-_=="} {
		base64Runs(s, func(string) bool { return false })
	}
	if !base64Runs("c2VjcmV0", func(d string) bool { return d == "secret" }) {
		t.Fatal("a plain base64 run is still decoded")
	}
}
