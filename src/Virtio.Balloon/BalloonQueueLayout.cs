namespace Virtio.Balloon;

/// <summary>
/// Which queue index carries which balloon queue for a negotiated feature set and a numbering; -1 for a queue
/// that does not exist. Known only after FEATURES_OK, since Linux's numbering depends on the features.
/// </summary>
public readonly record struct BalloonQueueLayout(int Inflate, int Deflate, int Stats, int FreePageHint, int Reporting)
{
    /// <summary>Queues of this layout (indices 0 .. Count - 1 exist, some perhaps unused with <see cref="BalloonQueueNumbering.Fixed"/>).</summary>
    public int Count => 1 + System.Math.Max(System.Math.Max(Deflate, Stats), System.Math.Max(FreePageHint, Reporting));

    /// <summary>The layout for <paramref name="features"/> under <paramref name="numbering"/>.</summary>
    public static BalloonQueueLayout For(ulong features, BalloonQueueNumbering numbering)
    {
        bool stats = BalloonFeatureBits.Has(features, BalloonFeatureBits.StatsVq);
        bool hint = BalloonFeatureBits.Has(features, BalloonFeatureBits.FreePageHint);
        bool reporting = BalloonFeatureBits.Has(features, BalloonFeatureBits.PageReporting);
        switch (numbering)
        {
            case BalloonQueueNumbering.Fixed:
                return new BalloonQueueLayout(0, 1, stats ? 2 : -1, hint ? 3 : -1, reporting ? 4 : -1);
            case BalloonQueueNumbering.Qemu:
            {
                int next = 3;
                int hintIndex = hint ? next++ : -1;
                return new BalloonQueueLayout(0, 1, 2, hintIndex, reporting ? next : -1);
            }

            default:
            {
                int next = 2;
                int statsIndex = stats ? next++ : -1;
                int hintIndex = hint ? next++ : -1;
                return new BalloonQueueLayout(0, 1, statsIndex, hintIndex, reporting ? next : -1);
            }
        }
    }
}
