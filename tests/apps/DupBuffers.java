// libdedup real-programs test: a JVM holding many identical byte arrays.
// Usage: java DupBuffers COPIES MIB HOLD_SECONDS
// Fills one pseudo-random source array, makes COPIES copies, holds them
// (the shim merges them meanwhile), writes into a few copies (copy-on-write
// of merged pages), then checks every byte and prints a checksum that must
// be the same with and without the shim.
import java.security.MessageDigest;
import java.util.Arrays;

public class DupBuffers {
    public static void main(String[] args) throws Exception {
        int copies = Integer.parseInt(args[0]);
        int size = Integer.parseInt(args[1]) << 20;
        long holdMs = Long.parseLong(args[2]) * 1000L;

        byte[] src = new byte[size];
        long x = 0x9E3779B97F4A7C15L;
        for (int i = 0; i < size; i++) {           // xorshift64: no zero pages
            x ^= x << 13; x ^= x >>> 7; x ^= x << 17;
            src[i] = (byte) x;
        }
        byte[][] bufs = new byte[copies][];
        for (int c = 0; c < copies; c++) bufs[c] = src.clone();

        Thread.sleep(holdMs / 2);
        // Write one byte per page into every 8th copy: copy-on-write breaks.
        for (int c = 0; c < copies; c += 8)
            for (int off = 0; off < size; off += 4096) bufs[c][off] ^= (byte) (c + 1);
        Thread.sleep(holdMs / 2);

        int bad = 0;
        MessageDigest all = MessageDigest.getInstance("SHA-256");
        for (int c = 0; c < copies; c++) {
            byte[] b = bufs[c];
            for (int i = 0; i < size; i++) {
                byte want = src[i];
                if (c % 8 == 0 && i % 4096 == 0) want ^= (byte) (c + 1);
                if (b[i] != want) { bad++; if (bad <= 5) System.out.println("MISMATCH copy " + c + " offset " + i); }
            }
            all.update(b);
        }
        StringBuilder hex = new StringBuilder();
        for (byte v : all.digest()) hex.append(String.format("%02x", v));
        System.out.println("java: copies=" + copies + " mib=" + (size >> 20) + " mismatches=" + bad + " sha256=" + hex);
        System.exit(bad == 0 ? 0 : 1);
    }
}
