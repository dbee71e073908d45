package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Pending deletions: the secrets a rotation replaced, kept in the config
// until the upstream confirms each gone. This file deletes them (when due,
// from the periodic function and step 7 of a rotation; at once, from
// client-secrets/pending) and keeps what failed, with its reason.

// deletionReport is what one pass over the pending deletions did.
type deletionReport struct {
	// deleted are gone upstream (deleted now, or 404: deleted before).
	deleted []pendingDeletion
	// failed were tried and are kept, with their reason.
	failed []failedDeletion
	// readopted were not tried: the mount holds them again. They stay
	// pending deletion, suspended while they are the stored secret.
	readopted []string
	// untried is how many chosen entries the pass had no time left for:
	// they are kept as they were, not counted as failures.
	untried int
}

// tryInTurn tries the chosen pending deletions one after another, the
// least recently tried first (those never tried first of all), so an id
// whose delete hangs moves to the back instead of holding back the same
// ones every pass. try gets each with how many are left to try (it
// included); done gets its outcome. Once ctx is done the rest are not
// tried: they count no failure and no backoff, and their number is
// returned.
func tryInTurn(ctx context.Context, chosen []pendingDeletion, try func(ctx context.Context, p pendingDeletion, left int) error,
	done func(p pendingDeletion, err error),
) (untried int) {
	slices.SortStableFunc(chosen, func(a, b pendingDeletion) int { return a.LastAttempt.Compare(b.LastAttempt) })
	for i, p := range chosen {
		if ctx.Err() != nil {
			return len(chosen) - i
		}
		done(p, try(ctx, p, len(chosen)-i))
	}
	return 0
}

// deletesContext is ctx less the time kept back to record the outcome: a
// quarter of what is left, at most settleTimeout. Without it, a delete
// that hangs at the end of a pass would spend the deadline the record
// needs, and the pass would record nothing: not the ones deleted, nor the
// failure that moves the hanging one to the back.
func deletesContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-min(settleTimeout, time.Until(deadline)/4)))
}

// deleteShare is how long one delete of a pass may take when left more
// deletes (this one included) share what is left of ctx's deadline: at
// most a request's timeout, so an id whose delete never answers spends its
// share only, and the ones after it are still tried.
func deleteShare(ctx context.Context, requestTimeout time.Duration, left int) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok || left < 1 {
		return requestTimeout
	}
	return min(requestTimeout, time.Until(deadline)/time.Duration(left))
}

type failedDeletion struct {
	p   pendingDeletion
	err error
}

func (r deletionReport) deletedIDs() []string {
	ids := make([]string, len(r.deleted))
	for i, p := range r.deleted {
		ids[i] = p.ID
	}
	return ids
}

// dueForDeletion says whether the periodic function deletes p at now: its
// grace is over, a failed attempt's wait too, and it belongs to the
// account the stored credential logs in to.
func (p pendingDeletion) dueForDeletion(now time.Time, account string) bool {
	return belongsTo(p.Account, account) && !now.Before(p.DueAt) && !now.Before(p.NextAttempt)
}

// suspends says whether p is the stored secret's own entry, which is
// suspended (suspendOrResumePending): nothing deletes it, and it is never
// due, while c holds that secret.
func (c *config) suspends(p pendingDeletion) bool { return p.ID == c.ClientSecretID }

// hasDueDeletions says whether a pending deletion is due at now (a
// suspended one never is).
func (c *config) hasDueDeletions(now time.Time) bool {
	account := c.account().fingerprint()
	for _, p := range c.PendingDeletions {
		if !c.suspends(p) && p.dueForDeletion(now, account) {
			return true
		}
	}
	return false
}

// withPending is the pending deletions with p recorded: one entry per id,
// so an id recorded again gets the new entry's due time and nothing else
// deletes it earlier.
func withPending(list []pendingDeletion, p pendingDeletion) []pendingDeletion {
	out := slices.DeleteFunc(slices.Clone(list), func(q pendingDeletion) bool { return q.ID == p.ID })
	return append(out, p)
}

// withoutStored is the pending deletions without the stored secret's
// entry: the secret a mount holds is never Vault's to delete.
func withoutStored(list []pendingDeletion, storedID string) ([]pendingDeletion, *pendingDeletion) {
	if storedID == "" {
		return list, nil
	}
	i := slices.IndexFunc(list, func(p pendingDeletion) bool { return p.ID == storedID })
	if i < 0 {
		return list, nil
	}
	dropped := list[i]
	return slices.Delete(slices.Clone(list), i, i+1), &dropped
}

// suspendOrResumePending keeps a config write from dropping a pending
// deletion through client_secret_id, and says what it did (warnings for
// the response). An entry whose id the write makes the stored one is
// suspended, not dropped: it stays on the list, and nothing deletes it
// while it is the stored secret (settlePendingLocked skips it). Dropping
// it would let a writer who knows no secret (naming the id with a secret
// of their own) leave the replaced secret live, tracked by nothing, once
// the current secret is written back. When the stored id moves on from a
// suspended entry, by a write or a rotation (which records it anew), the
// entry is due again with a fresh grace: whoever used it meanwhile gets
// previous_secret_grace, never less than it was promised before.
func suspendOrResumePending(cfg *config, previousID string, now time.Time) []string {
	if cfg.ClientSecretID == previousID {
		return nil
	}
	var warnings []string
	for i := range cfg.PendingDeletions {
		p := &cfg.PendingDeletions[i]
		switch p.ID {
		case cfg.ClientSecretID:
			warnings = append(warnings, fmt.Sprintf("client_secret_id %s was a replaced secret pending deletion (due %s); it is the stored secret again, "+
				"so it is not deleted while it is: it stays pending deletion, and is due again after previous_secret_grace once "+
				"client_secret_id names another secret", p.ID, formatTime(p.DueAt)))
		case previousID:
			due := now.Add(cfg.PreviousSecretGrace)
			if p.DueAt.After(due) {
				due = p.DueAt
			}
			*p = pendingDeletion{ID: p.ID, ReplacedAt: now, DueAt: due, Account: p.Account}
			warnings = append(warnings, fmt.Sprintf("client_secret_id %s, pending deletion, is no longer the stored secret: it is deleted at %s",
				p.ID, formatTime(due)))
		}
	}
	return warnings
}

// view is what a read shows of a pending deletion: never a secret.
func (p pendingDeletion) view(account string) map[string]any {
	return map[string]any{
		"id":              p.ID,
		"replaced_at":     formatTime(p.ReplacedAt),
		"due_at":          formatTime(p.DueAt),
		"account":         p.Account,
		"current_account": belongsTo(p.Account, account),
		"attempts":        p.Attempts,
		"last_error":      p.LastError,
		"next_attempt":    formatTime(p.NextAttempt),
	}
}

// deletePending deletes the replaced secrets whose grace has passed.
func (b *backend) deletePending(ctx context.Context, s logical.Storage, mount string) {
	log := b.Logger().With("mount", mount)
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		log.Debug("deleting replaced client secrets waits for the next run", "error", err)
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()
	if _, err := b.deleteDueLocked(ctx, s, log); err != nil {
		log.Warn("deleting replaced client secrets failed; retried about once a minute", "error", err)
	}
}

// deleteDueLocked deletes the pending deletions that are due.
func (b *backend) deleteDueLocked(ctx context.Context, s logical.Storage, log hclog.Logger) (deletionReport, error) {
	now := b.now()
	return b.settlePendingLocked(ctx, s, log, func(p pendingDeletion, account string) bool {
		return p.dueForDeletion(now, account)
	})
}

// settlePendingLocked deletes the pending deletions pick chooses, logged
// in with the stored secret, and takes each off the config once the
// upstream confirms it gone (deleted now, or 404 as deleted before). One
// that fails is kept with its reason and tried again after a growing wait;
// it holds back none of the others. Only entries of the stored config's
// account are ever tried: another account's secret is never deleted with
// this one's credential (a 404 there would prove nothing). The stored
// secret is never deleted, and nothing is while the stored secret has no
// id, since then any pending id may be the one the mount holds. The caller
// holds the write lock.
func (b *backend) settlePendingLocked(ctx context.Context, s logical.Storage, log hclog.Logger,
	pick func(p pendingDeletion, account string) bool,
) (deletionReport, error) {
	var rep deletionReport
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil || len(stored.PendingDeletions) == 0 {
		return rep, err
	}
	cfg := stored.resolved()
	if cfg.ClientSecretID == "" {
		return rep, userErrorf("the stored client secret has no client_secret_id, so Vault cannot tell which secret it holds " +
			"and deletes none; write client_secret_id to config")
	}
	account := cfg.account().fingerprint()
	var chosen []pendingDeletion
	for _, p := range stored.PendingDeletions {
		switch {
		case cfg.suspends(p):
			rep.readopted = append(rep.readopted, p.ID)
		case belongsTo(p.Account, account) && pick(p, account):
			chosen = append(chosen, p)
		}
	}
	if len(chosen) > 0 {
		client, err := b.newClient(cfg.clientConfig())
		if err != nil {
			return rep, err
		}
		defer client.Close()
		deletes, cancel := deletesContext(ctx)
		defer cancel()
		rep.untried = tryInTurn(deletes, chosen, func(ctx context.Context, p pendingDeletion, left int) error {
			return withTimeoutErr(ctx, deleteShare(ctx, cfg.RequestTimeout, left), func(ctx context.Context) error {
				return client.DeleteClientSecret(ctx, p.ID)
			})
		}, func(p pendingDeletion, err error) {
			switch {
			case err == nil:
				log.Info("deleted a replaced client secret", "client_secret_id", p.ID)
			case isNotFound(err):
				log.Info("deleted a replaced client secret: the upstream says it is gone already (404)", "client_secret_id", p.ID)
			default:
				rep.failed = append(rep.failed, failedDeletion{p: p, err: err})
				log.Warn("could not delete a replaced client secret; it stays in pending_deletions and is tried again later",
					"client_secret_id", p.ID, "refused", deletionRefused(err), "error", err)
				return
			}
			rep.deleted = append(rep.deleted, p)
			b.previousSecretDeleted(p)
		})
		if rep.untried > 0 {
			log.Warn("the pass ran out of time before every due replaced client secret was tried; those are tried first next time",
				"untried", rep.untried)
		}
	}
	if len(rep.deleted)+len(rep.failed) == 0 {
		return rep, nil
	}
	now := b.now().UTC()
	updated := stored.clone()
	gone := rep.deletedIDs()
	updated.PendingDeletions = slices.DeleteFunc(updated.PendingDeletions, func(p pendingDeletion) bool {
		return slices.Contains(gone, p.ID)
	})
	for _, f := range rep.failed {
		for i := range updated.PendingDeletions {
			if p := &updated.PendingDeletions[i]; p.ID == f.p.ID {
				p.Attempts++
				p.LastError = boundedReason(f.err)
				p.LastAttempt = now
				p.NextAttempt = now.Add(retryDeletionAfter(p.Attempts))
			}
		}
	}
	if err := putConfig(ctx, s, updated); err != nil {
		// Those deleted are gone upstream; the next pass gets a 404 for each.
		log.Warn("settled replaced client secrets, but could not record it in the config yet", "error", err)
	}
	return rep, nil
}

// deletionRefused says the upstream refused a delete for good (a 4xx
// other than 404, 408 and 429): trying again soon will not help, and the
// reason is kept for the operator.
func deletionRefused(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.StatusCode >= 400 && ue.StatusCode < 500 &&
		ue.StatusCode != http.StatusNotFound && ue.StatusCode != http.StatusRequestTimeout && ue.StatusCode != http.StatusTooManyRequests
}

// isNotFound says the upstream answered 404: the secret is gone already.
func isNotFound(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.StatusCode == http.StatusNotFound
}

// retryDeletionAfter is how long a pending deletion that failed this many
// times in a row waits before the next try: the next runs of the periodic
// function (about a minute apart) for the first three, then 1, 2, 4 ...
// minutes, at most an hour, so one the upstream refuses for good is not
// sent every minute for ever.
func retryDeletionAfter(failures int) time.Duration {
	if failures <= 3 {
		return 0
	}
	return scheduleBackoff(failures - 3)
}
