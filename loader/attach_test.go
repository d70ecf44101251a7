package loader

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ATTACH proves the partition constraint from the load tables' check
// constraints instead of scanning every row (the server says so at DEBUG1).
func TestAttachSkipsValidationScan(t *testing.T) { onBothLoadPaths(t, attachSkipsValidationScan) }

func attachSkipsValidationScan(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notices []string
	cfg.ConnConfig.RuntimeParams["client_min_messages"] = "debug1"
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Message)
		mu.Unlock()
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	mustLoad(t, pool, hashA, rawOf(t, rec('d', 5, 2, 2, rootA), rec('f', 5, 3, 1, rootA+"/a")), Options{})
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(notices, "\n")
	for _, table := range []string{"inode_p_" + hashA, "path_p_" + hashA} {
		if !strings.Contains(all, `partition constraint for table "`+table+`" is implied by existing constraints`) {
			t.Errorf("ATTACH of %s scanned the table; notices:\n%s", table, all)
		}
	}
}
