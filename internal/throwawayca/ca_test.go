package throwawayca

import (
	"crypto/x509"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNew_ServerCertificateVerifiesAgainstTheCAForEachLoopbackName(t *testing.T) {
	extra := net.ParseIP("10.1.2.3")
	caPEM, leaf, err := New("test", extra)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM), "the CA must be PEM a client can load")

	cert, err := x509.ParseCertificate(leaf.Certificate[0])
	require.NoError(t, err)
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "10.1.2.3"} {
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, "the certificate must be valid for %s", name)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"})
	require.Error(t, err, "the certificate must not be valid for other names")

	_, err = cert.Verify(x509.VerifyOptions{Roots: x509.NewCertPool(), DNSName: "localhost"})
	require.Error(t, err, "without the CA the certificate must not verify")

	// Two calls make two unrelated CAs.
	otherPEM, _, err := New("test")
	require.NoError(t, err)
	other := x509.NewCertPool()
	require.True(t, other.AppendCertsFromPEM(otherPEM))
	_, err = cert.Verify(x509.VerifyOptions{Roots: other, DNSName: "localhost"})
	require.Error(t, err, "another call's CA must not vouch for this certificate")
}
