package ssefeed

import (
	"encoding/json"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
)

// invalidateMemory tells the invalidator which memories an edge event
// changed. Past events (stored before the feed subscribed) are not passed
// on: Following(true) at the subscription already dropped what they could
// make stale.
//
// Every live edge event passes here, on every pod, so the fields are picked
// out with gjson, which reads only up to each of them, instead of decoding
// the whole envelope (decoding was a sixth of the daemon's CPU while it
// caught up with a backlog). The envelope's key is its after image's (its
// before image's for a delete); only an update can name a second memory,
// when it moved the edge, in its before image.
func (f *Feed) invalidateMemory(data []byte) {
	inv := f.cfg.Invalidator
	if inv == nil {
		return
	}
	r := gjson.GetManyBytes(data, "memory_id", "memory_type", "op")
	if r[0].Type != gjson.String {
		// An edge change this instance cannot attribute: drop everything
		// rather than serve what it may have changed.
		f.log.Warn("edge event without a readable memory key; the presence cache starts over", zap.Int("bytes", len(data)))
		inv.Following(true)
		return
	}
	id, typ := r[0].String(), r[1].String()
	inv.MemoryChanged(id, typ)
	if r[2].String() != domain.OpUpdated {
		return
	}
	b := gjson.GetManyBytes(data, "before.memory_id", "before.memory_type")
	if img, imgType := b[0].String(), b[1].String(); img != "" && (img != id || imgType != typ) {
		inv.MemoryChanged(img, imgType)
	}
}

// invalidateGallery tells the invalidator which gallery a status event is
// about.
func (f *Feed) invalidateGallery(data []byte) {
	inv := f.cfg.Invalidator
	if inv == nil {
		return
	}
	var ev struct {
		GalleryID string `json:"gallery_id"`
	}
	if err := json.Unmarshal(data, &ev); err != nil || ev.GalleryID == "" {
		f.log.Warn("gallery status event without a gallery id; the presence cache starts over", zap.Error(err))
		inv.Following(true)
		return
	}
	inv.GalleryChanged(ev.GalleryID)
}
