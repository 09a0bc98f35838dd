// Issue 11: Java NIO through proxify: SocketChannel non-blocking connect + Selector (epoll),
// then one echo round trip. java NioEcho.java HOST PORT: prints "java-nio-echo-ok".
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

public class NioEcho {
    public static void main(String[] a) throws Exception {
        String msg = "java-nio-echo-ok\n";
        long end = System.currentTimeMillis() + 10000;
        Selector sel = Selector.open();
        SocketChannel ch = SocketChannel.open();
        ch.configureBlocking(false);
        boolean done = ch.connect(new InetSocketAddress(a[0], Integer.parseInt(a[1])));
        ch.register(sel, done ? SelectionKey.OP_WRITE : SelectionKey.OP_CONNECT);
        ByteBuffer out = ByteBuffer.wrap(msg.getBytes(StandardCharsets.US_ASCII));
        ByteBuffer in = ByteBuffer.allocate(msg.length());
        int wakeups = 0;
        while (in.hasRemaining()) {
            long left = end - System.currentTimeMillis();
            if (left <= 0) { System.out.println("FAIL: timed out after " + wakeups + " wakeups"); System.exit(1); }
            sel.select(left);
            wakeups++;
            for (SelectionKey k : sel.selectedKeys()) {
                if (k.isConnectable()) {
                    if (ch.finishConnect()) k.interestOps(SelectionKey.OP_WRITE);
                } else if (k.isWritable()) {
                    ch.write(out);
                    if (!out.hasRemaining()) k.interestOps(SelectionKey.OP_READ);
                } else if (k.isReadable()) {
                    if (ch.read(in) < 0) { System.out.println("FAIL: EOF"); System.exit(1); }
                }
            }
            sel.selectedKeys().clear();
        }
        String got = new String(in.array(), StandardCharsets.US_ASCII);
        if (!got.equals(msg)) { System.out.println("FAIL: echo " + got); System.exit(1); }
        System.out.print(got);
        ch.close();
    }
}
