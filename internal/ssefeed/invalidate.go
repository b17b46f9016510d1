package ssefeed

import (
	"encoding/json"

	"go.uber.org/zap"
)

// keyImage is the key of a storage_edges row image.
type keyImage struct {
	MemoryID   string `json:"memory_id"`
	MemoryType string `json:"memory_type"`
}

// invalidateMemory tells the invalidator which memories an edge event
// changed. Past events (stored before the feed subscribed) are not passed
// on: Following(true) at the subscription already dropped what they could
// make stale.
func (f *Feed) invalidateMemory(data []byte) {
	inv := f.cfg.Invalidator
	if inv == nil {
		return
	}
	var env struct {
		MemoryID   *string   `json:"memory_id"`
		MemoryType string    `json:"memory_type"`
		Before     *keyImage `json:"before"`
		After      *keyImage `json:"after"`
	}
	if err := json.Unmarshal(data, &env); err != nil || env.MemoryID == nil {
		// An edge change this instance cannot attribute: drop everything
		// rather than serve what it may have changed.
		f.log.Warn("edge event without a readable memory key; the presence cache starts over", zap.Error(err))
		inv.Following(true)
		return
	}
	inv.MemoryChanged(*env.MemoryID, env.MemoryType)
	for _, img := range []*keyImage{env.Before, env.After} {
		if img != nil && img.MemoryID != "" && (img.MemoryID != *env.MemoryID || img.MemoryType != env.MemoryType) {
			inv.MemoryChanged(img.MemoryID, img.MemoryType)
		}
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
