package mapsindoors

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Every duration of the config reads back as whole seconds, a JSON number,
// whichever form it was written in. Terraform compares what it wrote with
// what it reads, so docs/terraform.md says to write seconds: those read
// back exactly as written.
func TestConfigDurations_ReadBackAsSecondsWhateverTheForm(t *testing.T) {
	// A valid value for each duration field, and what else it needs.
	values := map[string]struct {
		d     time.Duration
		extra map[string]any
	}{
		"request_timeout":        {90 * time.Second, nil},
		"rotation_period":        {2 * time.Hour, nil},
		"rotation_window":        {2 * time.Hour, map[string]any{"rotation_schedule": "0 3 * * *"}},
		"previous_secret_grace":  {36 * time.Hour, nil},
		"default_token_lifetime": {time.Hour, nil},
		"key_rollover_delay":     {3 * time.Hour, nil},
	}
	forms := []struct {
		name  string
		write func(time.Duration) any
	}{
		{"seconds as a number", func(d time.Duration) any { return int(d / time.Second) }},
		{"seconds as a string", func(d time.Duration) any { return fmt.Sprint(int(d / time.Second)) }},
		{"Go duration", func(d time.Duration) any { return d.String() }},
	}
	for _, f := range configFields {
		if f.fieldType != framework.TypeDurationSecond {
			continue
		}
		v, ok := values[f.name]
		require.True(t, ok, "duration field %s has no case here; add one", f.name)
		for _, form := range forms {
			t.Run(f.name+"/"+form.name, func(t *testing.T) {
				e := newTestEnv(t, fakeupstream.Options{})
				data := map[string]any{f.name: form.write(v.d)}
				for k, x := range v.extra {
					data[k] = x
				}
				e.configure(t, data)
				got := e.read(t, "config").Data[f.name]
				require.IsType(t, int64(0), got)
				require.Equal(t, int64(v.d/time.Second), got)
			})
		}
	}
}
