package flags_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tagcount/tagcount/flags"
)

// Without a server the client evaluates the embedded bootstrap, which turns
// every flag on.
func ExampleNew_bootstrapOnly() {
	c, err := flags.New(context.Background(), flags.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	fmt.Println("new posting path for author 42:", c.NewPostingPath(42))
	fmt.Println("tier deferral:", c.TierDeferral())
	fmt.Println("reconcile apply:", c.ReconcileApply())
	fmt.Println("unknown flag:", c.Enabled("tagcount.no-such-flag", 42))
	fmt.Println("source:", c.Snapshot().Source)
	// Output:
	// new posting path for author 42: true
	// tier deferral: true
	// reconcile apply: true
	// unknown flag: false
	// source: bootstrap
}
