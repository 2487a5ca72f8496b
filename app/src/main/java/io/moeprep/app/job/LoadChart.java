package io.moeprep.app.job;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import javax.imageio.ImageIO;

/**
 * The expert-load chart: one bar per expert (tokens kept, with the dropped ones stacked on top in a
 * lighter shade), coloured by the EP rank that owns the expert, a dashed line at the mean load,
 * axes and a legend. Drawn with java.awt in headless mode; when fonts cannot be loaded, the chart
 * is drawn without its text rather than failing.
 */
final class LoadChart {
  static {
    if (System.getProperty("java.awt.headless") == null) {
      System.setProperty("java.awt.headless", "true");
    }
  }

  /** Rank colours (Tableau 10), repeated for more ranks. */
  static final Color[] PALETTE = {
    new Color(0x4E79A7),
    new Color(0xF28E2B),
    new Color(0xE15759),
    new Color(0x76B7B2),
    new Color(0x59A14F),
    new Color(0xEDC948),
    new Color(0xB07AA1),
    new Color(0xFF9DA7),
    new Color(0x9C755F),
    new Color(0xBAB0AC)
  };

  private final int width;
  private final int height;
  private boolean text;
  private boolean textFailed;

  /**
   * @param text whether to draw text (titles, ticks, legend); {@code false} draws bars and axes
   */
  LoadChart(int width, int height, boolean text) {
    this.width = width;
    this.height = height;
    this.text = text;
  }

  /** True when text was asked for and could not be drawn (no usable fonts). */
  boolean textFailed() {
    return textFailed;
  }

  static Color rankColor(int rank) {
    return PALETTE[rank % PALETTE.length];
  }

  static Color lighter(Color c) {
    return new Color(
        (c.getRed() + 2 * 255) / 3, (c.getGreen() + 2 * 255) / 3, (c.getBlue() + 2 * 255) / 3);
  }

  /** The chart as PNG bytes. */
  byte[] png(ExpertLoad load, String title) throws IOException {
    BufferedImage img = draw(load, title);
    ByteArrayOutputStream bos = new ByteArrayOutputStream();
    if (!ImageIO.write(img, "png", bos)) {
      throw new IOException("no PNG writer in this Java runtime");
    }
    return bos.toByteArray();
  }

  BufferedImage draw(ExpertLoad load, String title) {
    BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
    Graphics2D g = img.createGraphics();
    try {
      g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
      g.setColor(Color.WHITE);
      g.fillRect(0, 0, width, height);
      int left = 80;
      int right = 20;
      int legendRows = (Math.min(load.numRanks(), 16) + 7) / 8 + 1;
      int top = 36 + 18 * legendRows + 10;
      int bottom = 60;
      int pw = Math.max(1, width - left - right);
      int ph = Math.max(1, height - top - bottom);
      int e = load.kept.length;
      long max = 1;
      for (int x = 0; x < e; x++) {
        max = Math.max(max, load.kept[x] + load.dropped[x]);
      }
      long tick = niceCeil((max + 4) / 5);
      long ticks = (max + tick - 1) / tick;
      long yMax = tick * ticks;
      // grid and y ticks
      g.setStroke(new BasicStroke(1f));
      for (int i = 0; i <= ticks; i++) {
        int y = top + ph - (int) Math.round((double) ph * i / ticks);
        g.setColor(new Color(0xE6E6E6));
        g.drawLine(left, y, left + pw, y);
        g.setColor(Color.DARK_GRAY);
        drawText(g, Long.toString(tick * i), left - 8, y + 4, 1.0f, 12);
      }
      double slot = (double) pw / e;
      double bar = Math.max(1, slot * 0.8);
      for (int x = 0; x < e; x++) {
        Color c = rankColor(load.placement.rankOf(x));
        int x0 = left + (int) Math.round(x * slot + (slot - bar) / 2);
        int bw = Math.max(1, (int) Math.round(bar));
        int hk = (int) Math.round((double) ph * load.kept[x] / yMax);
        int hd = (int) Math.round((double) ph * load.dropped[x] / yMax);
        g.setColor(c);
        g.fillRect(x0, top + ph - hk, bw, hk);
        if (hd > 0) {
          g.setColor(lighter(c));
          g.fillRect(x0, top + ph - hk - hd, bw, hd);
        }
      }
      // mean load per expert (kept + dropped): the balanced height
      double mean = (double) (ExpertLoad.sum(load.kept) + ExpertLoad.sum(load.dropped)) / e;
      int ym = top + ph - (int) Math.round(ph * mean / yMax);
      g.setColor(Color.BLACK);
      g.setStroke(
          new BasicStroke(
              1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 1f, new float[] {6f, 4f}, 0f));
      g.drawLine(left, ym, left + pw, ym);
      g.setStroke(new BasicStroke(1.5f));
      g.drawLine(left, top, left, top + ph);
      g.drawLine(left, top + ph, left + pw, top + ph);
      // x ticks: every expert when they fit, else every n-th
      int step = Math.max(1, (int) Math.ceil(e / (pw / 28.0)));
      for (int x = 0; x < e; x += step) {
        int cx = left + (int) Math.round((x + 0.5) * slot);
        g.drawLine(cx, top + ph, cx, top + ph + 4);
        drawText(g, Integer.toString(x), cx, top + ph + 18, 0.5f, 11);
      }
      drawText(
          g, "expert (slots kept, dropped stacked on top)", left + pw / 2, height - 14, 0.5f, 13);
      drawText(g, title, left, 22, 0f, 16);
      drawText(
          g, String.format(java.util.Locale.ROOT, "mean %.1f", mean), left + 4, ym - 5, 0f, 12);
      legend(g, load, left, 34);
    } finally {
      g.dispose();
    }
    return img;
  }

  private void legend(Graphics2D g, ExpertLoad load, int x, int y) {
    int ranks = load.numRanks();
    int shown = Math.min(ranks, 16);
    for (int r = 0; r < shown; r++) {
      int cx = x + (r % 8) * 90;
      int cy = y + (r / 8) * 18;
      g.setColor(rankColor(r));
      g.fillRect(cx, cy, 12, 12);
      g.setColor(Color.DARK_GRAY);
      drawText(g, "rank " + r, cx + 16, cy + 11, 0f, 12);
    }
    int cy = y + ((shown + 7) / 8) * 18;
    g.setColor(lighter(rankColor(0)));
    g.fillRect(x, cy, 12, 12);
    g.setColor(Color.DARK_GRAY);
    drawText(g, "lighter: dropped (over capacity)   dashed: mean load", x + 16, cy + 11, 0f, 12);
  }

  /** Draws text anchored at {@code align} (0 left, 0.5 centre, 1 right); never fails. */
  private void drawText(Graphics2D g, String s, int x, int y, float align, int size) {
    if (!text) {
      return;
    }
    try {
      g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, size));
      FontMetrics fm = g.getFontMetrics();
      g.drawString(s, x - Math.round(align * fm.stringWidth(s)), y);
    } catch (Throwable t) { // no fonts, broken fontconfig: draw the rest without text
      text = false;
      textFailed = true;
    }
  }

  /** The smallest of 1, 2, 5 x 10^k at least {@code v}. */
  static long niceCeil(long v) {
    long p = 1;
    while (true) {
      for (long m : new long[] {1, 2, 5}) {
        if (m * p >= v) {
          return m * p;
        }
      }
      p *= 10;
    }
  }
}
