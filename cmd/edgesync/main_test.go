package main

import (
	"testing"

	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
