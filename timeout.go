package mapsindoors

import (
	"context"
	"time"
)

// withTimeout runs one upstream call under its own deadline, so a slow
// upstream costs at most the config's request_timeout per call.
func withTimeout[T any](ctx context.Context, d time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}

// withTimeoutErr is withTimeout for calls that return only an error.
func withTimeoutErr(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}
