package mirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
)

// stepError says which canister step failed: metadata or asset.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// problem is a failure as a person sees it in sync_error: what failed and what to do. Technical
// detail stays in the log. permanent means retrying cannot help, so the edges fail at once.
type problem struct {
	note      string
	permanent bool
}

// Notes that tests and docs refer to.
const (
	NoteMemoryDeleted = "the memory was deleted before it reached ICP"
	NoteNoAssetURL    = "the memory has no asset URL, so there is no file to store on ICP; set the URL, or ask again for the metadata only"
)

// explain turns a job error into the sync_error a person reads.
func explain(err error, cfg Config) problem {
	var (
		fe     *FetchError
		exists *icp.AlreadyExistsError
		step   *stepError
	)
	what, thing := "the file", "file"
	if errors.As(err, &step) && step.step == domain.ArtifactMetadata {
		what, thing = "the metadata", domain.ArtifactMetadata
	}
	switch {
	case errors.Is(err, errMemoryGone):
		return problem{note: NoteMemoryDeleted, permanent: true}
	case errors.Is(err, errNoAssetURL):
		return problem{note: NoteNoAssetURL, permanent: true}
	case errors.As(err, &fe):
		return explainFetch(fe, cfg)
	case errors.As(err, &exists):
		return problem{permanent: true, note: fmt.Sprintf(
			"ICP already holds different %s for this memory (stored hash %s); the canister never overwrites, so check which version is right and, to keep this one, remove the memory and store it again as a new memory",
			thing, short(exists.ContentHash))}
	case errors.Is(err, icp.ErrHashMismatch):
		return problem{note: "the uploaded file did not verify on ICP (SHA-256 mismatch); the canister discarded the upload and the next attempt sends it again"}
	case errors.Is(err, icp.ErrInvalidUUID):
		return problem{permanent: true, note: "the memory id is not a canonical UUID, which the canister requires; this is a bug in the app's data, report it"}
	case errors.Is(err, icp.ErrInvalidArgument):
		return problem{permanent: true, note: fmt.Sprintf("the canister refused %s (%v); it cannot be stored as it is", what, errors.Unwrap(err))}
	case errors.Is(err, icp.ErrUnauthorized):
		return problem{note: "the canister refuses writes from this daemon's identity; a controller must authorize its principal (see the daemon log, or dfx identity get-principal) with the canister's authorize method; edgesync retries"}
	case errors.Is(err, icp.ErrUncertified):
		return problem{note: "the ICP answer could not be verified (certificate check failed); edgesync retries; check EDGESYNC_ICP_URL points at a genuine replica or boundary node and, for a local replica, EDGESYNC_ICP_FETCH_ROOT_KEY=true"}
	case errors.Is(err, context.DeadlineExceeded):
		return problem{note: fmt.Sprintf("storing %s on ICP took too long (no answer in time, or over the %s job limit); edgesync retries", what, cfg.JobTimeout)}
	case step != nil:
		return problem{note: fmt.Sprintf("the ICP canister could not be reached while storing %s; edgesync retries; if it persists, check EDGESYNC_ICP_URL and the replica or boundary node", what)}
	default:
		return problem{note: "storing on ICP failed unexpectedly; edgesync retries; see the daemon log for the details"}
	}
}

func explainFetch(fe *FetchError, cfg Config) problem {
	switch {
	case fe.Status == http.StatusNotFound || fe.Status == http.StatusGone:
		return problem{note: fmt.Sprintf("asset URL answered %d: the file is gone from Vercel Blob; re-upload it or remove the memory", fe.Status)}
	case fe.Status == http.StatusUnauthorized || fe.Status == http.StatusForbidden:
		return problem{note: fmt.Sprintf("asset URL answered %d: the blob store refused the download; make the file public or give the memory a URL edgesync may read", fe.Status)}
	case fe.Status >= 500 || fe.Status == http.StatusTooManyRequests:
		return problem{note: fmt.Sprintf("asset URL answered %d: the blob store is failing or busy; edgesync retries", fe.Status)}
	case fe.Status != 0:
		return problem{note: fmt.Sprintf("asset URL answered %d (%s); check the memory's URL", fe.Status, http.StatusText(fe.Status))}
	case fe.TooLarge && fe.Limit >= domain.MaxAssetBytes:
		return problem{permanent: true, note: fmt.Sprintf("the file is %s, more than the %s the ICP canister stores; store a smaller file (a shorter video, a lower resolution) or remove the memory",
			byteSize(fe.Size), byteSize(fe.Limit))}
	case fe.TooLarge:
		return problem{permanent: true, note: fmt.Sprintf("the file is %s, more than the %s limit (EDGESYNC_ASSET_MAX_BYTES, at most %s); raise the limit or remove the memory",
			byteSize(fe.Size), byteSize(fe.Limit), byteSize(domain.MaxAssetBytes))}
	case fe.Timeout:
		return problem{note: fmt.Sprintf("the asset download timed out (no data for %s); edgesync retries; check the blob host", cfg.FetchTimeout)}
	case fe.Err != nil && isHostError(fe.Err):
		return explainHost(fe.Err)
	case errors.Is(fe.Err, errNotHTTP):
		return problem{permanent: true, note: "the asset URL is not an http(s) URL; correct the memory's URL"}
	default:
		return problem{note: "the asset could not be downloaded (connection failed); edgesync retries; check the blob host"}
	}
}

func isHostError(err error) bool { _, ok := hostError(err); return ok }

// explainHost says why the mirror refused an asset host; retrying cannot help until the
// allow-list (or the URL) changes.
func explainHost(err error) problem {
	he, _ := hostError(err)
	via := "asset host"
	if he.Redirect {
		via = "asset URL redirected to host"
	}
	if he.Addr != nil {
		return problem{permanent: true, note: fmt.Sprintf(
			"the %s %s resolves to %s, a %s address edgesync does not fetch from; if that is intended (local development), name the address itself in EDGESYNC_ASSET_HOSTS (e.g. %s), then ask for Store Forever again",
			via, he.Host, he.Addr, addrKind(he.Addr), net.JoinHostPort(he.Addr.String(), portOf(he.Host)))}
	}
	return problem{permanent: true, note: fmt.Sprintf(
		"the %s %s is not in EDGESYNC_ASSET_HOSTS, so edgesync did not fetch it; add the host to EDGESYNC_ASSET_HOSTS if it is a blob store you trust (or correct the memory's URL), then ask for Store Forever again",
		via, he.Host)}
}

func portOf(hostport string) string {
	if _, p, err := net.SplitHostPort(hostport); err == nil {
		return p
	}
	return "PORT"
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12] + "…"
	}
	return hash
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
