package main

import "github.com/spf13/cobra"

func (a *app) statusCmd() *cobra.Command { return &cobra.Command{Use: "status", Hidden: true} }
