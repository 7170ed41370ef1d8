"""Hand-drawn example sketches: each stroke placed by hand (512 px canvas), drawn as a
pen would (a smooth curve through the points, slight tremor), saved at 256."""
import numpy as np
from PIL import Image, ImageDraw
rng = np.random.default_rng(7)
def curve(pts, n=12):
    pts = np.asarray(pts, float)
    if len(pts) < 3: return pts
    P = np.vstack([pts[0], pts, pts[-1]]); out=[]
    for i in range(1, len(P)-2):
        p0,p1,p2,p3 = P[i-1],P[i],P[i+1],P[i+2]
        for t in np.linspace(0,1,n,endpoint=False):
            out.append(0.5*((2*p1)+(-p0+p2)*t+(2*p0-5*p1+4*p2-p3)*t*t+(-p0+3*p1-3*p2+p3)*t**3))
    out.append(P[-2]); return np.array(out)
def stroke(d, pts, w=3, shake=0.8, grey=20):
    c = curve(pts); c = c + rng.normal(0, max(shake, SHAKE[0]), c.shape)
    d.line([tuple(p) for p in c], fill=grey, width=w, joint="curve")
def mirror(pts): return [(512-x,y) for x,y in pts]
def eye(d, cx, cy, s=1.0, lash=False):
    up=[(cx-34*s,cy+2),(cx-18*s,cy-9),(cx,cy-12),(cx+18*s,cy-8),(cx+32*s,cy+2)]
    lo=[(cx-34*s,cy+2),(cx-14*s,cy+9),(cx+8*s,cy+10),(cx+32*s,cy+2)]
    stroke(d,up,3); stroke(d,lo,2,grey=60)
    d.ellipse([cx-8,cy-9,cx+8,cy+7],outline=20,width=3); d.ellipse([cx-3,cy-4,cx+3,cy+2],fill=20)
    stroke(d,[(cx-30*s,cy-12),(cx-10*s,cy-20),(cx+12*s,cy-20),(cx+30*s,cy-10)],2,grey=110)  # crease
    if lash:
        for k in range(5):
            x=cx+(k-1)*10*s; stroke(d,[(x,cy-11+abs(k-2)),(x+4*s,cy-20+abs(k-2))],2)
SHAKE=[0.8]
def face(kind):
    im=Image.new("L",(512,512),255); d=ImageDraw.Draw(im)
    L,R=(182,218),(330,218)
    rough = kind=="rough"
    if rough: kind="man"; SHAKE[0]=2.0
    if kind=="man":
        outline=[(116,200),(114,262),(124,334),(152,410),(200,462),(256,482)]
        stroke(d,outline,3); stroke(d,mirror(outline),3)
        head=[(112,236),(108,160),(150,92),(220,58),(292,58),(362,92),(404,160),(400,236)]
        stroke(d,head,3)
        stroke(d,[(128,176),(170,138),(226,124),(286,124),(342,138),(386,176)],2,grey=50)
        for k in range(14):
            x=140+k*17; stroke(d,[(x,130+abs(k-7)*3),(x+8,98+abs(k-7)*2),(x+18,70+abs(k-7)*4)],2,grey=70)
        ear=[(116,214),(98,222),(94,262),(104,294),(122,304)]; stroke(d,ear,3); stroke(d,mirror(ear),3)
        brow=[(140,186),(168,174),(204,174),(228,184)]; stroke(d,brow,5); stroke(d,mirror(brow),5)
        eye(d,*L)
        if not rough: eye(d,*R)
        stroke(d,[(238,232),(234,274),(224,306),(222,316)],2,grey=90)
        stroke(d,[(214,312),(226,326),(256,334),(286,326),(298,312)],3)
        stroke(d,[(234,320),(244,326)],3); stroke(d,[(278,326),(268,320)],3)
        if rough:   # a mouth scribbled in a hurry
            zz=[(196+k*9, 372+(k%2)*22+rng.normal(0,3)) for k in range(14)]
            stroke(d,zz,3)
        else:
            stroke(d,[(200,380),(228,372),(256,376),(284,372),(312,380)],3)
            stroke(d,[(200,380),(256,388),(312,380)],3)
            stroke(d,[(214,392),(256,406),(298,392)],2,grey=90)
        stroke(d,[(186,452),(190,512)],3); stroke(d,[(326,452),(322,512)],3)
    if kind=="woman":
        outline=[(128,210),(126,270),(138,340),(166,410),(210,458),(256,474)]
        stroke(d,outline,3); stroke(d,mirror(outline),3)
        # long hair: outer silhouette and strands
        for off in (0,14,28):
            stroke(d,[(250,62),(190,70+off//2),(130,120+off),(98-off//2,220),(92-off//2,340),(84-off,512)],3 if off==0 else 2,grey=40+off*2)
            stroke(d,mirror([(250,62),(190,70+off//2),(130,120+off),(98-off//2,220),(92-off//2,340),(84-off,512)]),3 if off==0 else 2,grey=40+off*2)
        stroke(d,[(252,64),(220,96),(176,140),(140,196),(128,240)],3); stroke(d,[(252,64),(290,100),(340,150),(376,200),(384,240)],3)
        stroke(d,[(128,380),(120,440),(112,512)],2,grey=70); stroke(d,mirror([(128,380),(120,440),(112,512)]),2,grey=70)
        brow=[(146,184),(172,170),(206,170),(228,180)]; stroke(d,brow,3); stroke(d,mirror(brow),3)
        eye(d,*L,lash=True); eye(d,*R,lash=True)
        stroke(d,[(240,236),(238,280),(230,308)],2,grey=110)
        stroke(d,[(224,312),(236,324),(256,328),(276,324),(288,312)],2)
        stroke(d,[(238,320),(246,324)],3); stroke(d,[(274,324),(266,320)],3)
        stroke(d,[(204,378),(226,366),(246,364),(256,368),(266,364),(286,366),(308,378)],3)
        stroke(d,[(204,378),(230,382),(256,384),(282,382),(308,378)],3)
        stroke(d,[(212,384),(232,400),(256,404),(280,400),(300,384)],3)
        stroke(d,[(196,456),(200,512)],3); stroke(d,[(316,456),(312,512)],3)
    return im
for kind, name in (("man","hand1_male"),("woman","hand2_female"),("rough","hand3_rough_male")):
    face(kind).resize((256,256),Image.LANCZOS).save(f"examples/hand_drawn/{name}.png")
