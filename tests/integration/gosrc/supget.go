// A Go client for the supervisor tests (issue 13), built with CGO_ENABLED=0 (Go's own
// resolver and system calls: the shim cannot reach it).
//
//	supget URL ECHOHOST:PORT N
//
// Prints "page: BODY" for http.Get(URL), then dials ECHOHOST:PORT N times at once, each
// writing a line and reading it back, and prints "dials: OK/N", then "remote: ADDR" (the
// RemoteAddr of one of them). Exits 1 if anything failed (printing "error: ...").
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	url, echo := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	bad := false
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Println("error:", err)
		bad = true
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println("page:", strings.TrimSpace(string(body)))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	remote := ""
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", echo, 15*time.Second)
			if err != nil {
				mu.Lock()
				fmt.Println("error:", err)
				mu.Unlock()
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			msg := fmt.Sprintf("go-dial-%d\n", i)
			conn.Write([]byte(msg))
			line, err := bufio.NewReader(conn).ReadString('\n')
			mu.Lock()
			defer mu.Unlock()
			if err == nil && line == msg {
				ok++
				remote = conn.RemoteAddr().String()
			} else {
				fmt.Println("error: echo", i, err)
			}
		}(i)
	}
	wg.Wait()
	fmt.Printf("dials: %d/%d\n", ok, n)
	fmt.Println("remote:", remote)
	if bad || ok != n {
		os.Exit(1)
	}
}
