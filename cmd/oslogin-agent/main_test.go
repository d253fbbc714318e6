package main

import (
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
